// matmul_naive: c[M, N] = a[M, K] @ b[K, N], row-major float32, one invocation per output element.
//
// Memory traffic: every invocation reads a whole row of a and a whole column of b from storage
// (2 * K loads per output, 2 * M * N * K in all) with no reuse; the baseline the tiled kernel beats.
// Dispatch: ceil(N / 16) x ceil(M / 16) workgroups; invocations past the edge return at once.

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

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y;
    let col = gid.x;
    if (row >= dims.M || col >= dims.N) {
        return;
    }
    var acc: f32 = 0.0;
    for (var k: u32 = 0u; k < dims.K; k = k + 1u) {
        acc = acc + a[row * dims.K + k] * b[k * dims.N + col];
    }
    c[row * dims.N + col] = acc;
}
