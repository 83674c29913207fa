// bias_act_scale: y[M, N] = act(x[M, N] + bias[N]) * scale, row-major float32, one invocation per
// element. params.ACTIVATION picks act, with the codes of hone.kernels.triton: 0 identity,
// 1 relu (max(v, 0)), 2 gelu in its tanh form, 3 silu (v * sigmoid(v)).
//
// Memory traffic: one load of x, one (cached) load of bias and one store per element.
// Dispatch: a 2-D grid of 256-wide workgroups (x up to 65535, then y) flattened to one index, so
// arrays past 65535 * 256 elements still fit; invocations past M * N return at once.

const WORKGROUP_SIZE: u32 = 256u;

struct Params {
    M: u32,
    N: u32,
    SCALE: f32,
    ACTIVATION: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let index = gid.y * groups.x * WORKGROUP_SIZE + gid.x;
    if (index >= params.M * params.N) {
        return;
    }
    var value = x[index] + bias[index % params.N];
    switch params.ACTIVATION {
        case 1u: {
            value = max(value, 0.0);
        }
        case 2u: {
            // 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))); WGSL has no erf, as the tanh form needs none.
            // tanh is clamped: some drivers return NaN for tanh of large arguments.
            let inner = clamp(0.7978845608028654 * (value + 0.044715 * value * value * value), -15.0, 15.0);
            value = 0.5 * value * (1.0 + tanh(inner));
        }
        case 3u: {
            value = value / (1.0 + exp(-value));
        }
        default: {}
    }
    y[index] = value * params.SCALE;
}
