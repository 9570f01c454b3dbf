#include "common/sha256.h"

#include <openssl/evp.h>

#include <fstream>
#include <memory>
#include <vector>

#include "common/error.h"

namespace fp4lab {

namespace {
struct Ctx {
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  Ctx() {
    if (!c || EVP_DigestInit_ex(c, EVP_sha256(), nullptr) != 1) throw Error("sha256: OpenSSL init failed");
  }
  ~Ctx() { EVP_MD_CTX_free(c); }
  void update(const void* p, size_t n) {
    if (EVP_DigestUpdate(c, p, n) != 1) throw Error("sha256: OpenSSL update failed");
  }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(c, md, &len) != 1) throw Error("sha256: OpenSSL final failed");
    static const char* d = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < len; ++i) {
      s += d[md[i] >> 4];
      s += d[md[i] & 15];
    }
    return s;
  }
};
}  // namespace

std::string sha256_hex(std::string_view data) {
  Ctx c;
  c.update(data.data(), data.size());
  return c.hex();
}

std::string sha256_file_hex(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open for checksum");
  Ctx c;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (f.gcount() > 0) c.update(buf.data(), static_cast<size_t>(f.gcount()));
  }
  if (f.bad()) throw Error(path + ": read error during checksum");
  return c.hex();
}

}  // namespace fp4lab
