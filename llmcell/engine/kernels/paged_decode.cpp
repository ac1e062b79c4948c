// Paged decode attention for CPU (fp32): one query token per sequence attends to its context,
// read straight from the block-structured KV cache -- no gathered copy, no padding.
//
//   q            [D, H, hd]            float32, contiguous
//   key_cache    [NB, BS, KVH, hd]     float32, contiguous
//   value_cache  [NB, BS, KVH, hd]     float32, contiguous
//   block_tables [D, max_blocks]       int64
//   context_lens [D]                   int64 (tokens to attend to, including the new one)
//   returns      [D, H, hd]
//
// Work is split over (sequence, kv head) pairs; each pair serves the H/KVH query heads of its
// group, so every key and value row is read once per group.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <limits>
#include <vector>

torch::Tensor paged_decode(torch::Tensor q, torch::Tensor key_cache, torch::Tensor value_cache,
                           torch::Tensor block_tables, torch::Tensor context_lens, double scale) {
  TORCH_CHECK(q.dtype() == torch::kFloat32 && key_cache.dtype() == torch::kFloat32,
              "paged_decode: float32 only");
  q = q.contiguous();
  const int64_t D = q.size(0), H = q.size(1), hd = q.size(2);
  const int64_t BS = key_cache.size(1), KVH = key_cache.size(2);
  const int64_t G = H / KVH, max_blocks = block_tables.size(1);
  auto out = torch::empty_like(q);
  const float* qp = q.data_ptr<float>();
  const float* kp = key_cache.data_ptr<float>();
  const float* vp = value_cache.data_ptr<float>();
  const int64_t* bt = block_tables.data_ptr<int64_t>();
  const int64_t* lens = context_lens.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const float fscale = static_cast<float>(scale);
  const int64_t row = KVH * hd;  // floats between consecutive slots of one kv head

  at::parallel_for(0, D * KVH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> acc(G * hd);
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t d = pair / KVH, kvh = pair % KVH;
      const int64_t n = lens[d];
      scores.assign(G * n, 0.0f);
      const float* qg = qp + (d * H + kvh * G) * hd;
      for (int64_t t = 0; t < n; ++t) {
        const int64_t slot = bt[d * max_blocks + t / BS] * BS + t % BS;
        const float* k = kp + slot * row + kvh * hd;
        for (int64_t g = 0; g < G; ++g) {
          const float* qq = qg + g * hd;
          float s = 0.0f;
          for (int64_t i = 0; i < hd; ++i) s += qq[i] * k[i];
          scores[g * n + t] = s * fscale;
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        float* sg = scores.data() + g * n;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < n; ++t) m = sg[t] > m ? sg[t] : m;
        float sum = 0.0f;
        for (int64_t t = 0; t < n; ++t) { sg[t] = std::exp(sg[t] - m); sum += sg[t]; }
        const float inv = 1.0f / sum;
        for (int64_t t = 0; t < n; ++t) sg[t] *= inv;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t t = 0; t < n; ++t) {
        const int64_t slot = bt[d * max_blocks + t / BS] * BS + t % BS;
        const float* v = vp + slot * row + kvh * hd;
        for (int64_t g = 0; g < G; ++g) {
          const float p = scores[g * n + t];
          float* a = acc.data() + g * hd;
          for (int64_t i = 0; i < hd; ++i) a[i] += p * v[i];
        }
      }
      float* o = op + (d * H + kvh * G) * hd;
      for (int64_t i = 0; i < G * hd; ++i) o[i] = acc[i];
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode", &paged_decode, "Paged decode attention (CPU, fp32)");
}
