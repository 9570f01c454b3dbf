#pragma once
#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace fp4lab::test {

inline std::string shared_dir() {
  return FP4LAB_SHARED_DIR;
}
inline bool have_shared() {
  return std::filesystem::exists(shared_dir() + "/models");
}
inline bool have_shared(const std::string& sub) {
  return std::filesystem::exists(shared_dir() + "/" + sub);
}

struct CmdResult {
  int status = -1;
  std::string out;  // stdout and stderr together
};

// Runs the fp4lab binary with arguments (shell-quoted by the caller).
inline CmdResult run_fp4lab(const std::string& args) {
  CmdResult r;
  const std::string cmd = std::string(FP4LAB_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline std::string read_file_text(const std::filesystem::path& p) {
  FILE* f = std::fopen(p.c_str(), "rb");
  std::string s;
  if (!f) return s;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) s.append(buf.data(), n);
  std::fclose(f);
  return s;
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
