// One exception type for user-facing failures: its message is the single line the CLI prints.
#pragma once
#include <stdexcept>
#include <string>

namespace fp4lab {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace fp4lab
