// Paged attention for CPU, read straight from the block-structured KV cache -- no gathered copy,
// no padding. fp32, bf16 and fp16: reduced-precision keys and values are widened to fp32 as they
// are read, and scores, softmax and sums stay in fp32 (the compiler vectorises the widening with
// -march=native).
//
// paged_decode: one query token per sequence attends to its context.
//   q            [D, H, hd]            the cache's dtype, contiguous
//   key_cache    [NB, BS, KVH, hd]     float32, bfloat16 or float16, contiguous
//   value_cache  [NB, BS, KVH, hd]     as key_cache
//   block_tables [D, max_blocks]       int64
//   context_lens [D]                   int64 (tokens to attend to, including the new one)
//   returns      [D, H, hd]
// paged_prefix: a prefill chunk of L tokens that continues `start` cached ones: row i attends
// causally to the first start + i + 1 tokens of one sequence (block_table [max_blocks]).
// write_kv: this step's keys and values [T, KVH, hd] into their cache slots [T], both in one pass.
//
// Work is split over (row, kv head) pairs; each pair serves the H/KVH query heads of its group,
// so every key and value row is read once per group.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

// Rows d of q attend to lens[d] tokens (or, without lens, to first_len + d) of the sequence whose
// block table starts at bt + d * bt_stride (bt_stride 0: one table for every row).
template <typename T>
void paged_impl(const torch::Tensor& q, const torch::Tensor& key_cache,
                const torch::Tensor& value_cache, const int64_t* bt, int64_t bt_stride,
                const int64_t* lens, int64_t first_len, double scale, torch::Tensor& out) {
  const int64_t D = q.size(0), H = q.size(1), hd = q.size(2);
  const int64_t BS = key_cache.size(1), KVH = key_cache.size(2);
  const int64_t G = H / KVH;
  const T* qp = q.data_ptr<T>();
  const T* kp = key_cache.data_ptr<T>();
  const T* vp = value_cache.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const float fscale = static_cast<float>(scale);
  const int64_t row = KVH * hd;  // floats between consecutive slots of one kv head

  at::parallel_for(0, D * KVH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> acc(G * hd);
    std::vector<float> qf(G * hd);
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t d = pair / KVH, kvh = pair % KVH;
      const int64_t n = lens != nullptr ? lens[d] : first_len + d;
      const int64_t* table = bt + d * bt_stride;
      scores.assign(G * n, 0.0f);
      const T* qg = qp + (d * H + kvh * G) * hd;
      for (int64_t i = 0; i < G * hd; ++i) qf[i] = static_cast<float>(qg[i]);
      for (int64_t t = 0; t < n; ++t) {
        const int64_t slot = table[t / BS] * BS + t % BS;
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
        const int64_t slot = table[t / BS] * BS + t % BS;
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

void check_caches(const torch::Tensor& q, const torch::Tensor& key_cache,
                  const torch::Tensor& value_cache) {
  TORCH_CHECK(q.dtype() == key_cache.dtype() && key_cache.dtype() == value_cache.dtype(),
              "paged attention: q, key_cache and value_cache must share a dtype");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(),
              "paged attention: the caches must be contiguous");
  TORCH_CHECK(q.dtype() == torch::kFloat32 || q.dtype() == torch::kBFloat16 ||
              q.dtype() == torch::kHalf, "paged attention: float32, bfloat16 or float16 only");
}

torch::Tensor run(torch::Tensor q, const torch::Tensor& key_cache,
                  const torch::Tensor& value_cache, const int64_t* bt, int64_t bt_stride,
                  const int64_t* lens, int64_t first_len, double scale) {
  check_caches(q, key_cache, value_cache);
  q = q.contiguous();
  auto out = torch::empty_like(q);
  if (q.dtype() == torch::kFloat32) {
    paged_impl<float>(q, key_cache, value_cache, bt, bt_stride, lens, first_len, scale, out);
  } else if (q.dtype() == torch::kBFloat16) {
    paged_impl<c10::BFloat16>(q, key_cache, value_cache, bt, bt_stride, lens, first_len, scale,
                              out);
  } else {
    paged_impl<c10::Half>(q, key_cache, value_cache, bt, bt_stride, lens, first_len, scale, out);
  }
  return out;
}

torch::Tensor paged_decode(torch::Tensor q, torch::Tensor key_cache, torch::Tensor value_cache,
                           torch::Tensor block_tables, torch::Tensor context_lens, double scale) {
  TORCH_CHECK(block_tables.dtype() == torch::kInt64 && block_tables.is_contiguous() &&
              context_lens.dtype() == torch::kInt64 && context_lens.is_contiguous(),
              "paged_decode: block_tables and context_lens must be contiguous int64");
  return run(q, key_cache, value_cache, block_tables.data_ptr<int64_t>(), block_tables.size(1),
             context_lens.data_ptr<int64_t>(), 0, scale);
}

torch::Tensor paged_prefix(torch::Tensor q, torch::Tensor key_cache, torch::Tensor value_cache,
                           torch::Tensor block_table, int64_t start, double scale) {
  TORCH_CHECK(block_table.dtype() == torch::kInt64 && block_table.is_contiguous(),
              "paged_prefix: block_table must be contiguous int64");
  const int64_t BS = key_cache.size(1);
  TORCH_CHECK(block_table.numel() * BS >= start + q.size(0),
              "paged_prefix: block_table does not cover start + rows tokens");
  return run(q, key_cache, value_cache, block_table.data_ptr<int64_t>(), 0, nullptr, start + 1,
             scale);
}

template <typename T>
void write_kv_impl(torch::Tensor& key_cache, torch::Tensor& value_cache, const int64_t* slots,
                   const T* k, const T* v, int64_t tokens, int64_t row) {
  T* kc = key_cache.data_ptr<T>();
  T* vc = value_cache.data_ptr<T>();
  at::parallel_for(0, tokens, 64, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      std::memcpy(kc + slots[t] * row, k + t * row, row * sizeof(T));
      std::memcpy(vc + slots[t] * row, v + t * row, row * sizeof(T));
    }
  });
}

void write_kv(torch::Tensor key_cache, torch::Tensor value_cache, torch::Tensor slot_mapping,
              torch::Tensor k, torch::Tensor v) {
  check_caches(k, key_cache, value_cache);
  TORCH_CHECK(v.dtype() == k.dtype(), "write_kv: k and v must share a dtype");
  TORCH_CHECK(slot_mapping.dtype() == torch::kInt64 && slot_mapping.is_contiguous(),
              "write_kv: slot_mapping must be contiguous int64");
  k = k.contiguous();
  v = v.contiguous();
  const int64_t tokens = k.size(0), row = key_cache.size(2) * key_cache.size(3);
  TORCH_CHECK(k.numel() == tokens * row && v.numel() == tokens * row &&
              slot_mapping.numel() == tokens, "write_kv: k, v and slot_mapping disagree in size");
  const int64_t* slots = slot_mapping.data_ptr<int64_t>();
  const int64_t capacity = key_cache.size(0) * key_cache.size(1);
  for (int64_t t = 0; t < tokens; ++t)
    TORCH_CHECK(slots[t] >= 0 && slots[t] < capacity, "write_kv: slot out of range");
  if (k.dtype() == torch::kFloat32) {
    write_kv_impl<float>(key_cache, value_cache, slots, k.data_ptr<float>(), v.data_ptr<float>(),
                         tokens, row);
  } else if (k.dtype() == torch::kBFloat16) {
    write_kv_impl<c10::BFloat16>(key_cache, value_cache, slots, k.data_ptr<c10::BFloat16>(),
                                 v.data_ptr<c10::BFloat16>(), tokens, row);
  } else {
    write_kv_impl<c10::Half>(key_cache, value_cache, slots, k.data_ptr<c10::Half>(),
                             v.data_ptr<c10::Half>(), tokens, row);
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode", &paged_decode, "Paged decode attention (CPU; fp32, bf16, fp16)");
  m.def("paged_prefix", &paged_prefix,
        "A prefill chunk over a cached prefix, read from the paged cache (CPU)");
  m.def("write_kv", &write_kv, "This step's keys and values into their cache slots (CPU)");
}
