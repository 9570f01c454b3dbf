// Built-in model shapes for speed work without downloads ("preset:NAME"). Weights are generated
// deterministically by the engine; this file only holds the architectures.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "io/model_config.h"

namespace fp4lab {

struct Preset {
  std::string name;
  std::string description;
  ModelConfig config;
};

const std::vector<Preset>& presets();
std::optional<Preset> find_preset(const std::string& name);  // name with or without "preset:"
bool is_preset_ref(const std::string& model);                // "preset:..."

}  // namespace fp4lab
