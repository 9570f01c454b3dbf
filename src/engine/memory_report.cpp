#include "engine/memory_report.h"

namespace fp4lab {

nlohmann::json memory_report_json(const MemoryReport& r) {
  auto items = [](const std::vector<MemoryItem>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& i : v) a.push_back({{"name", i.name}, {"bytes", i.bytes}, {"on_host", i.on_host}});
    return a;
  };
  return {{"plan",
           {{"weights", items(r.fit.plan.weights)},
            {"run", items(r.fit.plan.run)},
            {"load_transient_bytes", r.fit.plan.load_transient},
            {"context_bytes", r.fit.plan.context_bytes},
            {"context_measured", r.context_measured},
            {"buffers_peak_bytes", r.fit.plan.buffers_peak()},
            {"device_peak_bytes", r.fit.plan.device_peak()}}},
          {"choices", r.fit.choices},
          {"embedding_on_host", r.fit.embedding_on_host},
          {"limit_bytes", r.limit},
          {"limit_from_flag", r.limit_from_flag},
          {"buffers_peak_bytes", r.buffers_peak},
          {"process_peak_bytes", r.process_peak},
          {"arena_growths", r.arena_growths}};
}

}  // namespace fp4lab
