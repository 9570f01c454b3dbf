#pragma once
#include <array>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace fp4lab::test {

// The repository's test data (tests/data, provenance in its README.md). Nothing is skipped when a file is
// missing: the test that reads it fails on the open, and TestData.EveryFileMatchesItsChecksum names it.
inline std::string data_dir() {
  return FP4LAB_TEST_DATA_DIR;
}

// Writes out_file with the tensors of the checkpoint in src_dir, each passed through edit(name, bytes) first
// (false leaves the tensor out): the tests' way to make a checkpoint with one thing wrong in it.
inline void rewrite_tensors(const std::string& src_dir, const std::string& out_file,
                            const std::function<bool(const std::string&, std::vector<uint8_t>&)>& edit) {
  const TensorStore st = TensorStore::open_dir(src_dir);
  SafetensorsWriter w;
  for (const auto& [name, t] : st.all()) {
    std::vector<uint8_t> b(t->data, t->data + t->nbytes());
    if (edit(name, b)) w.add(name, t->dtype, t->shape, std::move(b));
  }
  w.write(out_file);
}

struct CmdResult {
  int status = -1;
  std::string out;  // stdout and stderr together
};

// Runs a shell command line, capturing its stdout (redirections are the caller's).
inline CmdResult run_command(const std::string& cmd) {
  CmdResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Runs the fp4lab binary with arguments (shell-quoted by the caller), stdout and stderr together.
inline CmdResult run_fp4lab(const std::string& args) {
  return run_command(std::string(FP4LAB_BINARY) + " " + args + " 2>&1");
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/fp4lab-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string str(const std::string& sub = "") const {
    return sub.empty() ? path.string() : (path / sub).string();
  }
};

}  // namespace fp4lab::test
