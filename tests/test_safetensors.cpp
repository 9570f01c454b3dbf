#include <gtest/gtest.h>

#include <fstream>

#include "common/error.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace fp4lab;
using fp4lab::test::TempDir;

namespace {

std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> f(8 + header.size() + data_bytes, 0x5a);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f[size_t(i)] = uint8_t(n >> (8 * i));
  std::copy(header.begin(), header.end(), f.begin() + 8);
  return f;
}

std::string parse_error(const std::vector<uint8_t>& f) {
  try {
    parse_safetensors_header(f, "bad.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

}  // namespace

TEST(Safetensors, WriteReadRoundTripAllDtypes) {
  TempDir d;
  SafetensorsWriter w;
  const std::vector<std::pair<DType, size_t>> types = {
      {DType::F32, 4}, {DType::F16, 2}, {DType::BF16, 2}, {DType::F8_E4M3, 1}, {DType::U8, 1},
      {DType::I8, 1},  {DType::I32, 4}, {DType::I64, 8},  {DType::BOOL, 1}};
  for (const auto& [dt, sz] : types) {
    std::vector<uint8_t> b(3 * 5 * sz);
    for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(i * 7 + sz);
    w.add(std::string("t_") + dtype_name(dt), dt, {3, 5}, b);
  }
  w.add("scalar", DType::F32, {}, {0, 0, 128, 63});
  w.set_metadata("format", "pt");
  w.write(d.str("model.safetensors"));
  const auto store = TensorStore::open_dir(d.str());
  for (const auto& [dt, sz] : types) {
    const auto& t = store.get(std::string("t_") + dtype_name(dt));
    EXPECT_EQ(t.dtype, dt);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{3, 5}));
    for (size_t i = 0; i < t.nbytes(); ++i) ASSERT_EQ(t.data[i], uint8_t(i * 7 + sz));
  }
  EXPECT_EQ(tensor_to_f32(store.get("scalar"))[0], 1.0f);
  EXPECT_EQ(store.get("scalar").numel(), 1);
}

TEST(Safetensors, ShardedCheckpointThroughIndex) {
  TempDir d;
  SafetensorsWriter a, b;
  a.add("x", DType::F32, {2}, std::vector<uint8_t>(8, 1));
  b.add("y", DType::F32, {1}, std::vector<uint8_t>(4, 2));
  a.write(d.str("model-00001-of-00002.safetensors"));
  b.write(d.str("model-00002-of-00002.safetensors"));
  std::ofstream(d.str("model.safetensors.index.json"))
      << R"({"metadata":{},"weight_map":{"x":"model-00001-of-00002.safetensors","y":"model-00002-of-00002.safetensors"}})";
  const auto s = TensorStore::open_dir(d.str());
  EXPECT_EQ(s.files().size(), 2u);
  EXPECT_EQ(s.get("y").data[0], 2);
  std::ofstream(d.str("model.safetensors.index.json"))
      << R"({"weight_map":{"x":"model-00001-of-00002.safetensors","z":"model-00002-of-00002.safetensors"}})";
  try {
    TensorStore::open_dir(d.str());
    FAIL() << "missing tensor accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'z'"), std::string::npos) << e.what();
  }
  std::ofstream(d.str("model.safetensors.index.json")) << R"({"weight_map":{"x":"../etc/passwd"}})";
  EXPECT_THROW(TensorStore::open_dir(d.str()), Error);
}

TEST(Safetensors, MalformedFilesGiveClearErrors) {
  const std::string ok = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  EXPECT_EQ(parse_error(make_file(ok, 16)), "");
  EXPECT_NE(parse_error({1, 2, 3}).find("truncated"), std::string::npos);
  auto f = make_file(ok, 16);
  f[0] = 0xff;
  f[1] = 0xff;
  EXPECT_NE(parse_error(f).find("past the end"), std::string::npos);
  f[7] = 0x7f;
  EXPECT_NE(parse_error(f).find("100 MB"), std::string::npos);
  EXPECT_NE(parse_error(make_file(ok, 8)).find("run past the data section"), std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8))
                .find("unknown dtype"),
            std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8))
                .find("does not match"),
            std::string::npos);
  EXPECT_NE(
      parse_error(
          make_file(
              R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})",
              12))
          .find("overlap"),
      std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8))
                .find("begin > end"),
            std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"w": [1,2)", 0)).find("invalid JSON"), std::string::npos);
  EXPECT_NE(parse_error(make_file(std::string(5000, '[') + std::string(5000, ']'), 0)).find("nested deeper"),
            std::string::npos);
  EXPECT_NE(
      parse_error(
          make_file(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,0]}})",
                    0))
          .find("overflow"),
      std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", 0))
                .find("non-negative"),
            std::string::npos);
  EXPECT_NE(parse_error(make_file(R"([1,2])", 0)).find("not a JSON object"), std::string::npos);
  // The error names the file and the tensor.
  const std::string e =
      parse_error(make_file(R"({"layer.w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
  EXPECT_NE(e.find("bad.safetensors"), std::string::npos);
  EXPECT_NE(e.find("layer.w"), std::string::npos);
}

TEST(Safetensors, CliReportsOneLineAndNonZeroExit) {
  TempDir d;
  std::ofstream(d.str("config.json")) << R"({"model_type":"llama","hidden_size":16,"num_hidden_layers":1,
    "num_attention_heads":1,"vocab_size":8,"intermediate_size":16})";
  write_bytes(d.str("model.safetensors"),
              make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
  auto r = fp4lab::test::run_fp4lab("inspect " + d.str());
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_NE(r.out.find("fp4lab: error:"), std::string::npos) << r.out;
  r = fp4lab::test::run_fp4lab("inspect /nonexistent/dir");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("not a directory"), std::string::npos) << r.out;
}
