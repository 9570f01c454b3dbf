#include "io/dtype.h"

#include <array>
#include <utility>

namespace fp4lab {

namespace {
struct Entry {
  DType d;
  const char* name;
  size_t size;
};
constexpr std::array<Entry, 15> kTable{{{DType::F64, "F64", 8},
                                        {DType::F32, "F32", 4},
                                        {DType::F16, "F16", 2},
                                        {DType::BF16, "BF16", 2},
                                        {DType::F8_E4M3, "F8_E4M3", 1},
                                        {DType::F8_E5M2, "F8_E5M2", 1},
                                        {DType::I64, "I64", 8},
                                        {DType::I32, "I32", 4},
                                        {DType::I16, "I16", 2},
                                        {DType::I8, "I8", 1},
                                        {DType::U64, "U64", 8},
                                        {DType::U32, "U32", 4},
                                        {DType::U16, "U16", 2},
                                        {DType::U8, "U8", 1},
                                        {DType::BOOL, "BOOL", 1}}};
}  // namespace

std::optional<DType> dtype_from_string(std::string_view s) {
  for (const auto& e : kTable)
    if (s == e.name) return e.d;
  return std::nullopt;
}
const char* dtype_name(DType d) {
  return kTable[static_cast<size_t>(d)].name;
}
size_t dtype_size(DType d) {
  return kTable[static_cast<size_t>(d)].size;
}

}  // namespace fp4lab
