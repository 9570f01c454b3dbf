// safetensors: memory-mapped, zero-copy reading of single files and sharded checkpoints, and a writer.
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:[b,e]}},
// then the data section that the offsets index.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/dtype.h"

namespace fp4lab {

struct TensorView {
  std::string name;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // offsets into the data section
  const uint8_t* data = nullptr;
  std::string file;          // which shard holds it
  uint64_t file_offset = 0;  // where its bytes start in that file (for readers that pread instead of mapping)

  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
  std::span<const uint8_t> bytes() const { return {data, static_cast<size_t>(nbytes())}; }
};

// Parses and validates a header against a file of total size file_size. Throws fp4lab::Error naming the
// file and, where there is one, the tensor. Used directly by the fuzz target.
struct SafetensorsHeader {
  uint64_t header_len = 0;
  std::vector<TensorView> tensors;  // data pointers unset; offsets relative to the data section
  std::map<std::string, std::string> metadata;
};
SafetensorsHeader parse_safetensors_header(std::span<const uint8_t> file, const std::string& filename);

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::span<const uint8_t> bytes() const { return {data_, size_}; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<MappedFile> map_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards named by
// model.safetensors.index.json, or every *.safetensors file when neither exists.
class TensorStore {
 public:
  static TensorStore open_dir(const std::string& dir);
  static TensorStore open_file(const std::string& path);

  const TensorView* find(const std::string& name) const;
  const TensorView& get(const std::string& name) const;  // throws naming the tensor and directory
  const std::map<std::string, const TensorView*>& all() const { return index_; }
  const std::string& source() const { return source_; }
  std::vector<std::string> files() const;

 private:
  void add(std::unique_ptr<SafetensorsFile> f);
  std::string source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  size_t data_bytes() const;
  void write(const std::string& path) const;  // atomic: writes path.tmp then renames

 private:
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

// The fraction of these files' bytes resident in the page cache (mincore), 0 for no bytes: tells a cold load
// from a warm one.
double page_cache_fraction(const std::vector<std::string>& files);

// Helpers to read a tensor as float32 whatever its floating dtype (F32, F16, BF16, F8_E4M3).
std::vector<float> tensor_to_f32(const TensorView& t);

}  // namespace fp4lab
