// What every results document says about where it was made: tool (version, commit), host, timestamp (UTC),
// and gpu (name, compute capability, memory, driver, CUDA runtime, NVFP4 path; null on the CPU backend).
#pragma once
#include <nlohmann/json.hpp>

namespace fp4lab {

void run_environment(nlohmann::json& doc, bool cuda);

}  // namespace fp4lab
