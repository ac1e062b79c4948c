// Paged decode attention for CPU: one query token per sequence attends to its context, read
// straight from the block-structured KV cache -- no gathered copy, no padding. fp32, bf16 and
// fp16: reduced-precision keys and values are widened to fp32 as they are read, and scores,
// softmax and sums stay in fp32 (the compiler vectorises the widening with -march=native).
//
//   q            [D, H, hd]            the cache's dtype, contiguous
//   key_cache    [NB, BS, KVH, hd]     float32, bfloat16 or float16, contiguous
//   value_cache  [NB, BS, KVH, hd]     as key_cache
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

template <typename T>
void paged_decode_impl(const torch::Tensor& q, const torch::Tensor& key_cache,
                       const torch::Tensor& value_cache, const torch::Tensor& block_tables,
                       const torch::Tensor& context_lens, double scale, torch::Tensor& out) {
  const int64_t D = q.size(0), H = q.size(1), hd = q.size(2);
  const int64_t BS = key_cache.size(1), KVH = key_cache.size(2);
  const int64_t G = H / KVH, max_blocks = block_tables.size(1);
  const T* qp = q.data_ptr<T>();
  const T* kp = key_cache.data_ptr<T>();
  const T* vp = value_cache.data_ptr<T>();
  const int64_t* bt = block_tables.data_ptr<int64_t>();
  const int64_t* lens = context_lens.data_ptr<int64_t>();
  T* op = out.data_ptr<T>();
  const float fscale = static_cast<float>(scale);
  const int64_t row = KVH * hd;  // floats between consecutive slots of one kv head

  at::parallel_for(0, D * KVH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> acc(G * hd);
    std::vector<float> qf(G * hd);
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t d = pair / KVH, kvh = pair % KVH;
      const int64_t n = lens[d];
      scores.assign(G * n, 0.0f);
      const T* qg = qp + (d * H + kvh * G) * hd;
      for (int64_t i = 0; i < G * hd; ++i) qf[i] = static_cast<float>(qg[i]);
      for (int64_t t = 0; t < n; ++t) {
        const int64_t slot = bt[d * max_blocks + t / BS] * BS + t % BS;
        const T* k = kp + slot * row + kvh * hd;
        for (int64_t g = 0; g < G; ++g) {
          const float* qq = qf.data() + g * hd;
          float s = 0.0f;
          for (int64_t i = 0; i < hd; ++i) s += qq[i] * static_cast<float>(k[i]);
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
        const T* v = vp + slot * row + kvh * hd;
        for (int64_t g = 0; g < G; ++g) {
          const float p = scores[g * n + t];
          float* a = acc.data() + g * hd;
          for (int64_t i = 0; i < hd; ++i) a[i] += p * static_cast<float>(v[i]);
        }
      }
      T* o = op + (d * H + kvh * G) * hd;
      for (int64_t i = 0; i < G * hd; ++i) o[i] = static_cast<T>(acc[i]);
    }
  });
}

torch::Tensor paged_decode(torch::Tensor q, torch::Tensor key_cache, torch::Tensor value_cache,
                           torch::Tensor block_tables, torch::Tensor context_lens, double scale) {
  TORCH_CHECK(q.dtype() == key_cache.dtype() && key_cache.dtype() == value_cache.dtype(),
              "paged_decode: q, key_cache and value_cache must share a dtype");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(),
              "paged_decode: the caches must be contiguous");
  q = q.contiguous();
  auto out = torch::empty_like(q);
  if (q.dtype() == torch::kFloat32) {
    paged_decode_impl<float>(q, key_cache, value_cache, block_tables, context_lens, scale, out);
  } else if (q.dtype() == torch::kBFloat16) {
    paged_decode_impl<c10::BFloat16>(q, key_cache, value_cache, block_tables, context_lens,
                                     scale, out);
  } else if (q.dtype() == torch::kHalf) {
    paged_decode_impl<c10::Half>(q, key_cache, value_cache, block_tables, context_lens, scale,
                                 out);
  } else {
    TORCH_CHECK(false, "paged_decode: float32, bfloat16 or float16 only");
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode", &paged_decode, "Paged decode attention (CPU; fp32, bf16, fp16)");
}
