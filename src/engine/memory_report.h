// A run's memory report (the plan, its choices, the limit, the peaks) as a results document's "memory"
// object.
#pragma once
#include <nlohmann/json.hpp>

#include "cuda/run_options.h"

namespace fp4lab {

nlohmann::json memory_report_json(const MemoryReport& r);

}  // namespace fp4lab
