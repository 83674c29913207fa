// matmul_tiled: c[M, N] = a[M, K] @ b[K, N], row-major float32, 16 x 16 tiles in workgroup memory.
//
// Memory traffic: each workgroup computes one 16 x 16 block of c. For every step along K it loads a
// 16 x 16 tile of a and one of b into workgroup memory (one element per invocation), then each
// invocation reads 16 pairs from there: storage loads drop from 2 * K to 2 * K / 16 per output.
// Bounds: tile loads past the edge of a or b store 0.0 (adds nothing to the sum), and only
// invocations inside c write. No invocation returns early: every one must reach the barriers.
// Dispatch: ceil(N / 16) x ceil(M / 16) workgroups.

const TILE: u32 = 16u;

struct Dims {
    M: u32,
    N: u32,
    K: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

var<workgroup> a_tile: array<array<f32, 16>, 16>;
var<workgroup> b_tile: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * TILE + lid.y;
    let col = wid.x * TILE + lid.x;
    let num_tiles = (dims.K + TILE - 1u) / TILE;
    var acc: f32 = 0.0;
    for (var t: u32 = 0u; t < num_tiles; t = t + 1u) {
        let a_col = t * TILE + lid.x;
        let b_row = t * TILE + lid.y;
        var a_value: f32 = 0.0;
        if (row < dims.M && a_col < dims.K) {
            a_value = a[row * dims.K + a_col];
        }
        var b_value: f32 = 0.0;
        if (b_row < dims.K && col < dims.N) {
            b_value = b[b_row * dims.N + col];
        }
        a_tile[lid.y][lid.x] = a_value;
        b_tile[lid.y][lid.x] = b_value;
        workgroupBarrier();
        for (var k: u32 = 0u; k < TILE; k = k + 1u) {
            acc = acc + a_tile[lid.y][k] * b_tile[k][lid.x];
        }
        workgroupBarrier();
    }
    if (row < dims.M && col < dims.N) {
        c[row * dims.N + col] = acc;
    }
}
