// C entry points of the emulated CUDA launchers (host_emulation.h), for ctypes: each forwards to the launch_* of
// csrc/cuda/*.cu with its arguments spelt as plain pointers and scalars, and returns the cudaError_t.
#include <cstdint>

#include "../../csrc/cuda/ito_step_launchers.h"
#include "../../csrc/cuda/launchers.h"
#include "../../csrc/cuda/trace_step_launchers.h"
#include "host_emulation.h"

using fastdiff::DType;

extern "C" {

// The order the emulation resumes a block's threads in (host_emulation.h): 1 last to first, 0 first to last.
void emu_reverse_thread_order(int reverse) { fastdiff_emulation::reverse_order = reverse != 0; }

int emu_philox_normal(const int64_t* keys, int64_t batch, int64_t numel, uint32_t step, uint32_t stage, uint32_t stream,
                      int dtype, void* out) {
  return fastdiff::launch_philox_normal(keys, batch, numel, step, stage, stream, static_cast<DType>(dtype), out, nullptr);
}

int emu_solver_step(const void* x, double a, const void* const* terms, const double* coefs, int num_terms,
                    const int64_t* keys, int draws, const uint32_t* steps, const uint32_t* stages, const uint32_t* streams,
                    const double* draw_coefs, int64_t batch, int64_t per_sample, int dtype, void* out) {
  fastdiff::NoiseDraws noise{};
  noise.count = draws;
  for (int d = 0; d < draws && d < fastdiff::kMaxDraws; ++d) {
    noise.step[d] = steps[d];
    noise.stage[d] = stages[d];
    noise.stream[d] = streams[d];
    noise.coef[d] = draw_coefs[d];
  }
  return fastdiff::launch_solver_step(x, a, terms, coefs, num_terms, keys, noise, batch, per_sample,
                                      static_cast<DType>(dtype), out, nullptr);
}

// Doubles of workspace launch_ito_step needs.
int64_t emu_ito_workspace(int64_t batch, int64_t per_sample, int models, int mode) {
  return batch * fastdiff::ito_step_partition(per_sample).parts * fastdiff::ito_stat_count(models, mode == fastdiff::kAnd);
}

// scalars: delta, sqrt_delta, inv_s2, temperature, rcond; draw: step, stage, stream.
int emu_ito_step(const void* x, int models, int mode, const double* scalars, const uint32_t* draw, const void* const* denoised,
                 const double* log_weights, const double* bias, const void* ell, const int64_t* keys, int64_t batch,
                 int64_t per_sample, int dtype, double* workspace, void* out, void* ell_next, void* kappa) {
  fastdiff::ItoParams p{};
  p.models = models;
  p.mode = mode;
  p.delta = scalars[0];
  p.sqrt_delta = scalars[1];
  p.inv_s2 = scalars[2];
  p.temperature = scalars[3];
  p.rcond = scalars[4];
  p.step = draw[0];
  p.stage = draw[1];
  p.stream = draw[2];
  for (int i = 0; i < models && i < fastdiff::kMaxModels; ++i) {
    p.denoised[i] = denoised[i];
    p.log_weights[i] = log_weights[i];
    p.bias[i] = bias[i];
  }
  return fastdiff::launch_ito_step(x, p, ell, keys, batch, per_sample, static_cast<DType>(dtype), workspace, out, ell_next,
                                   kappa, nullptr);
}

// Doubles of workspace launch_trace_step needs.
int64_t emu_trace_workspace(int64_t batch, int64_t per_sample) {
  return batch * fastdiff::trace_step_partition(per_sample).parts;
}

// scalars: a, c, w; counter: step, stage.
int emu_trace_step(const void* x, const void* const* terms, const double* coefs, int num_terms, const void* u,
                   int64_t probes, const int64_t* keys, const uint32_t* counter, int gaussian, const double* total,
                   const double* scalars, int64_t batch, int64_t per_sample, int dtype, void* out, double* total_out,
                   double* workspace) {
  fastdiff::TraceStepArgs args{};
  args.x = x;
  args.a = scalars[0];
  args.num_terms = num_terms;
  for (int t = 0; t < num_terms && t < fastdiff::kMaxTerms; ++t) {
    args.terms[t] = terms[t];
    args.coefs[t] = coefs[t];
  }
  args.u = u;
  args.probes = probes;
  args.keys = keys;
  args.step = counter[0];
  args.stage = counter[1];
  args.gaussian = gaussian != 0;
  args.total = total;
  args.c = scalars[1];
  args.w = scalars[2];
  args.batch = batch;
  args.per_sample = per_sample;
  args.out = out;
  args.total_out = total_out;
  args.workspace = workspace;
  return fastdiff::launch_trace_step(args, static_cast<DType>(dtype), nullptr);
}
}
