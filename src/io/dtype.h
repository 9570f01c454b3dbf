#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fp4lab {

// safetensors element types found in real checkpoints.
enum class DType { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U64, U32, U16, U8, BOOL };

std::optional<DType> dtype_from_string(std::string_view s);
const char* dtype_name(DType d);
size_t dtype_size(DType d);

}  // namespace fp4lab
