// SHA-256 through OpenSSL's libcrypto: prompt hashes in evaluation records and the integrity check of
// downloaded checkpoint files (the Hub reports LFS files by their sha256).
#pragma once
#include <string>
#include <string_view>

namespace fp4lab {

std::string sha256_hex(std::string_view data);
// Streams a file; throws fp4lab::Error naming it when it cannot be read.
std::string sha256_file_hex(const std::string& path);

}  // namespace fp4lab
