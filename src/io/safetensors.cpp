#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "common/error.h"
#include "common/hd.h"
#include "format/e4m3.h"
#include "common/json_util.h"

namespace fp4lab {

namespace fs = std::filesystem;

// The reference implementation refuses headers above 100 MB; so do we, before allocating anything.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsHeader parse_safetensors_header(std::span<const uint8_t> file, const std::string& filename) {
  auto fail = [&](const std::string& msg) -> Error { return Error(filename + ": " + msg); };
  if (file.size() < 8) throw fail("truncated safetensors file (" + std::to_string(file.size()) + " bytes)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[static_cast<size_t>(i)];
  if (n > kMaxHeaderBytes) throw fail("safetensors header length " + std::to_string(n) + " exceeds 100 MB");
  if (n > file.size() - 8)
    throw fail("safetensors header length " + std::to_string(n) + " runs past the end of the " +
               std::to_string(file.size()) + "-byte file");
  const std::string_view text(reinterpret_cast<const char*>(file.data() + 8), static_cast<size_t>(n));
  const json h = parse_json_untrusted(text, filename + " (safetensors header)");
  if (!h.is_object()) throw fail("safetensors header is not a JSON object");

  SafetensorsHeader out;
  out.header_len = n;
  const uint64_t data_size = file.size() - 8 - n;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw fail("__metadata__ value for '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto tfail = [&](const std::string& msg) { return fail("tensor '" + name + "': " + msg); };
    if (!v.is_object()) throw tfail("entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) throw tfail("missing dtype");
    if (!v.contains("shape") || !v["shape"].is_array()) throw tfail("missing shape");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      throw tfail("missing data_offsets [begin, end]");
    const std::string dts = v["dtype"].get<std::string>();
    const auto dt = dtype_from_string(dts);
    if (!dt) throw tfail("unknown dtype '" + dts + "'");
    TensorView t;
    t.name = name;
    t.dtype = *dt;
    t.file = filename;
    // Element count with overflow checks: a hostile shape must not wrap around to a small byte size.
    uint64_t numel = 1;
    for (const json& d : v["shape"]) {
      if (!d.is_number_unsigned()) throw tfail("shape entries must be non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw tfail("dimension too large");
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim) throw tfail("shape overflows");
      numel *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const json& o : v["data_offsets"])
      if (!o.is_number_unsigned()) throw tfail("data_offsets must be non-negative integers");
    t.begin = v["data_offsets"][0].get<uint64_t>();
    t.end = v["data_offsets"][1].get<uint64_t>();
    if (t.begin > t.end) throw tfail("data_offsets begin > end");
    if (t.end > data_size)
      throw tfail("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                  ") run past the data section (" + std::to_string(data_size) + " bytes); file truncated?");
    const uint64_t esz = dtype_size(t.dtype);
    if (numel > std::numeric_limits<uint64_t>::max() / esz || numel * esz != t.end - t.begin)
      throw tfail("byte size " + std::to_string(t.end - t.begin) + " does not match dtype " + dts +
                  " and shape");
    out.tensors.push_back(std::move(t));
  }
  // Overlap check over the byte ranges (empty tensors overlap nothing).
  std::vector<const TensorView*> order;
  for (const auto& t : out.tensors)
    if (t.end > t.begin) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->begin < order[i - 1]->end)
      throw fail("tensors '" + order[i - 1]->name + "' and '" + order[i]->name + "' overlap");
  return out;
}

MappedFile::MappedFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw Error(path + ": mmap failed (" + std::strerror(errno) + ")");
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : path_(path), map_(std::make_unique<MappedFile>(path)) {
  auto h = parse_safetensors_header(map_->bytes(), path);
  const uint8_t* data = map_->bytes().data() + 8 + h.header_len;
  for (auto& t : h.tensors) {
    t.data = data + t.begin;
    t.file_offset = 8 + h.header_len + t.begin;
  }
  tensors_ = std::move(h.tensors);
  metadata_ = std::move(h.metadata);
}

void TensorStore::add(std::unique_ptr<SafetensorsFile> f) {
  for (const auto& t : f->tensors()) {
    auto [it, inserted] = index_.emplace(t.name, &t);
    if (!inserted) throw Error(f->path() + ": tensor '" + t.name + "' also appears in " + it->second->file);
  }
  files_.push_back(std::move(f));
}

TensorStore TensorStore::open_file(const std::string& path) {
  TensorStore s;
  s.source_ = path;
  s.add(std::make_unique<SafetensorsFile>(path));
  return s;
}

TensorStore TensorStore::open_dir(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error(dir + ": not a directory");
  TensorStore s;
  s.source_ = dir;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const json j = read_json_file(index.string());
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error(index.string() + ": missing weight_map");
    std::set<std::string> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        throw Error(index.string() + ": weight_map['" + it.key() + "'] is not a string");
      const std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
        throw Error(index.string() + ": shard name '" + f + "' leaves the checkpoint directory");
      shards.insert(f);
    }
    for (const auto& f : shards) s.add(std::make_unique<SafetensorsFile>((fs::path(dir) / f).string()));
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it)
      if (!s.find(it.key()))
        throw Error(index.string() + ": tensor '" + it.key() + "' is listed but missing from " +
                    it.value().get<std::string>());
    return s;
  }
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(single)) {
    s.add(std::make_unique<SafetensorsFile>(single.string()));
    return s;
  }
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") found.push_back(e.path().string());
  std::sort(found.begin(), found.end());
  if (found.empty()) throw Error(dir + ": no .safetensors files found");
  for (const auto& f : found) s.add(std::make_unique<SafetensorsFile>(f));
  return s;
}

const TensorView* TensorStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorView& TensorStore::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) throw Error(source_ + ": missing tensor '" + name + "'");
  return *t;
}

std::vector<std::string> TensorStore::files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(f->path());
  return out;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            std::vector<uint8_t> bytes) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (static_cast<uint64_t>(n) * dtype_size(dtype) != bytes.size())
    throw Error("safetensors writer: tensor '" + name + "' has " + std::to_string(bytes.size()) +
                " bytes, shape and dtype need " +
                std::to_string(static_cast<uint64_t>(n) * dtype_size(dtype)));
  for (const auto& t : tensors_)
    if (t.name == name) throw Error("safetensors writer: duplicate tensor '" + name + "'");
  tensors_.push_back({name, dtype, std::move(shape), std::move(bytes)});
}

size_t SafetensorsWriter::data_bytes() const {
  size_t n = 0;
  for (const auto& t : tensors_) n += t.bytes.size();
  return n;
}

void SafetensorsWriter::write(const std::string& path) const {
  // Tensors are laid out in name order, like the reference writer does.
  std::vector<const Pending*> order;
  for (const auto& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });
  json h = json::object();
  if (!metadata_.empty()) h["__metadata__"] = metadata_;
  uint64_t off = 0;
  for (const auto* t : order) {
    h[t->name] = {
        {"dtype", dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {off, off + t->bytes.size()}}};
    off += t->bytes.size();
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs.push_back(' ');  // keeps the data section 8-byte aligned for zero-copy readers
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(tmp + ": cannot create file");
    uint8_t len[8];
    uint64_t n = hs.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    f.write(reinterpret_cast<const char*>(len), 8);
    f.write(hs.data(), static_cast<std::streamsize>(hs.size()));
    for (const auto* t : order)
      f.write(reinterpret_cast<const char*>(t->bytes.data()), static_cast<std::streamsize>(t->bytes.size()));
    f.flush();
    if (!f) throw Error(tmp + ": write failed (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(path + ": cannot rename from " + tmp + " (" + ec.message() + ")");
}

double page_cache_fraction(const std::vector<std::string>& files) {
  uint64_t pages = 0, resident = 0;
  const long psz = ::sysconf(_SC_PAGESIZE);
  for (const auto& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) {
        const size_t n = (static_cast<size_t>(st.st_size) + psz - 1) / psz;
        std::vector<unsigned char> vec(n);
        if (::mincore(p, static_cast<size_t>(st.st_size), vec.data()) == 0) {
          pages += n;
          for (unsigned char v : vec) resident += v & 1;
        }
        ::munmap(p, static_cast<size_t>(st.st_size));
      }
    }
    ::close(fd);
  }
  return pages ? static_cast<double>(resident) / pages : 0.0;
}

std::vector<float> tensor_to_f32(const TensorView& t) {
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out.data(), p, n * 4);
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i)
        out[i] = bf16_to_f32(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i)
        out[i] = f16_to_f32(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      break;
    case DType::F8_E4M3:
      for (size_t i = 0; i < n; ++i) out[i] = e4m3_decode(p[i]);
      break;
    default:
      throw Error(t.file + ": tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) +
                  ", expected a float type");
  }
  return out;
}

}  // namespace fp4lab
