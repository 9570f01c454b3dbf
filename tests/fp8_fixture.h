// FP8 checkpoint fixtures for the CPU and GPU FP8 tests: tiny-llama with some linear layers stored in FP8 as
// ModelOpt or compressed-tensors write them, next to a float32 twin holding exactly those layers' dequantized
// values.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/json_util.h"
#include "format/e4m3.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace fp4lab::test {

inline std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Writes tiny-llama to `fp8_dir` with `layers` in FP8 (per-channel scales when per_channel) and the float32
// twin with the same values to `twin_dir`; config.json as given.
inline void write_fixture(const std::string& fp8_dir, const std::string& twin_dir,
                          const std::vector<std::string>& layers, bool per_channel, const json& config,
                          const json& hf_quant_config) {
  const std::string src = fp4lab::test::data_dir() + "/models/tiny-llama";
  const TensorStore st = TensorStore::open_dir(src);
  SafetensorsWriter fp8, twin;
  for (const auto& [name, t] : st.all()) {
    std::vector<float> v = tensor_to_f32(*t);
    const std::string layer = name.substr(0, name.size() - 7);
    const bool q =
        name.ends_with(".weight") && std::find(layers.begin(), layers.end(), layer) != layers.end();
    if (!q) {
      fp8.add(name, DType::F32, t->shape, f32_bytes(v));
      twin.add(name, DType::F32, t->shape, f32_bytes(v));
      continue;
    }
    const int64_t n = t->shape[0], k = t->shape[1];
    std::vector<float> scale(per_channel ? n : 1, 0.0f);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        float& s = scale[per_channel ? r : 0];
        s = std::max(s, std::fabs(v[r * k + c]) / 448.0f);
      }
    std::vector<uint8_t> codes(v.size());
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const float s = scale[per_channel ? r : 0];
        codes[r * k + c] = e4m3_encode(v[r * k + c] / s);
        v[r * k + c] = e4m3_decode(codes[r * k + c]) * s;
      }
    fp8.add(name, DType::F8_E4M3, t->shape, codes);
    fp8.add(layer + ".weight_scale", DType::F32,
            per_channel ? std::vector<int64_t>{n, 1} : std::vector<int64_t>{}, f32_bytes(scale));
    twin.add(name, DType::F32, t->shape, f32_bytes(v));
  }
  std::filesystem::create_directories(fp8_dir);
  std::filesystem::create_directories(twin_dir);
  fp8.write(fp8_dir + "/model.safetensors");
  twin.write(twin_dir + "/model.safetensors");
  json plain = config;
  plain.erase("quantization_config");
  write_text_file(fp8_dir + "/config.json", config.dump(2));
  write_text_file(twin_dir + "/config.json", plain.dump(2));
  if (!hf_quant_config.is_null()) write_text_file(fp8_dir + "/hf_quant_config.json", hf_quant_config.dump(2));
}

inline json tiny_llama_config() {
  return read_json_config_file(data_dir() + "/models/tiny-llama/config.json");
}

}  // namespace fp4lab::test
