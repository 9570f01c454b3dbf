// A runnable model: weights + architecture forward written once against the Backend interface.
#pragma once
#include <memory>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "model/weights.h"

namespace fp4lab {

// Per-sequence cache: KV for attention layers, conv and SSM state (float32) for Mamba layers.
struct SeqState {
  int pos = 0;
  std::vector<std::vector<float>> k, v;     // per layer: [pos, kv_heads * head_dim]
  std::vector<std::vector<float>> conv;     // per layer: [conv_dim, kernel - 1]
  std::vector<std::vector<float>> ssm;      // per layer: [heads, head_dim, state]
};

class Model {
 public:
  Model(ModelWeights w, Backend& backend);
  const ModelConfig& config() const { return w_.config; }
  const ModelWeights& weights() const { return w_; }
  SeqState new_sequence() const;
  // Runs `tokens` after what the sequence already holds; returns logits [T, vocab] for every new position
  // (all_logits) or only the last row.
  std::vector<float> forward(SeqState& s, std::span<const int> tokens, bool all_logits);

 private:
  void llama_layer(const LayerWeights& L, size_t li, SeqState& s, std::vector<float>& x, int t,
                   std::span<const int> pos);
  void nemotron_layer(const LayerWeights& L, size_t li, SeqState& s, std::vector<float>& x, int t,
                      std::span<const int> pos);
  void attention_block(const LayerWeights& L, size_t li, SeqState& s, std::span<const float> h, int t,
                       std::span<const int> pos, bool use_rope, std::span<float> out);
  void mamba_block(const LayerWeights& L, size_t li, SeqState& s, std::span<const float> h, int t,
                   std::span<float> out);

  ModelWeights w_;
  Backend& be_;
  std::vector<float> inv_freq_;
};

}  // namespace fp4lab
