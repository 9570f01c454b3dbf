#include <cstdio>
#include <filesystem>
#include <map>
#include <new>

#include "commands.h"
#include "common/error.h"
#include "cuda/gpu_telemetry.h"

int main(int argc, char** argv) {
  CLI::App app{"fp4lab: NVFP4 inference engine and benchmark suite"};
  app.set_version_flag("--version", std::string("fp4lab ") + FP4LAB_VERSION + " (" + FP4LAB_GIT_COMMIT + ")");
  app.require_subcommand(1);
  std::map<CLI::App*, fp4lab::cli::Action> actions;
  auto reg = [&](const char* name, const char* help, fp4lab::cli::Action (*add)(CLI::App&)) {
    CLI::App* sub = app.add_subcommand(name, help);
    actions[sub] = add(*sub);
  };
  reg("inspect", "Describe a checkpoint or preset: layers, formats, parameters, bytes per token",
      fp4lab::cli::add_inspect);
  reg("doctor", "List GPUs and the NVFP4 path each one gets", fp4lab::cli::add_doctor);
  reg("bench", "Benchmarks: gemm (NVFP4 kernels vs cuBLAS)", fp4lab::cli::add_bench);
  reg("explain", "Predicted BF16 vs NVFP4 decode speed on datasheet GPUs (roofline)",
      fp4lab::cli::add_explain);
  reg("eval",
      "Accuracy: gsm8k (lm-eval scoring), ppl (perplexity, KL and top-1 agreement between two quantizations)",
      fp4lab::cli::add_eval);
  reg("tokenize", "Encode JSONL text to token ids with a Hugging Face tokenizer (or --decode)",
      fp4lab::cli::add_tokenize);
  reg("quantize", "Write a ModelOpt-layout NVFP4 checkpoint from a BF16 one", fp4lab::cli::add_quantize);
  reg("export", "Write a preset as a Hugging Face checkpoint (BF16 or ModelOpt NVFP4, sharded)",
      fp4lab::cli::add_export);
  reg("report", "Markdown + HTML report with gnuplot charts from results of one or many machines",
      fp4lab::cli::add_report);
  reg("results", "The results store: list, show, compare, export", fp4lab::cli::add_results);
  reg("generate", "Generate text or tokens from prompts (text, chat-templated text, or token ids)",
      fp4lab::cli::add_generate);
  reg("chat", "Talk to a checkpoint through its chat template (interactive; /reset, /exit)",
      fp4lab::cli::add_chat);
  reg("serve", "OpenAI-compatible HTTP server (completions, chat, streaming, /metrics) over one model",
      fp4lab::cli::add_serve);
  reg("demo", "Show the NVFP4 format at work on generated data", fp4lab::cli::add_demo);
  CLI11_PARSE(app, argc, argv);
  // The GPU's used memory before this process creates a CUDA context: what a run's memory report subtracts.
  for (const char* name : {"bench", "generate", "eval", "chat", "serve"})
    if (app.got_subcommand(name)) fp4lab::note_gpu_memory_baseline();
  try {
    for (auto& [sub, act] : actions)
      if (sub->parsed()) return act();
  } catch (const fp4lab::Error& e) {
    std::fprintf(stderr, "fp4lab: error: %s\n", e.what());
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    // Its what() is the library's own wording ("filesystem error: ..."); the path and the reason suffice.
    std::fprintf(stderr, "fp4lab: error: %s: %s\n", e.path1().string().c_str(), e.code().message().c_str());
    return 1;
  } catch (const nlohmann::json::exception& e) {
    // "[json.exception.type_error.302] type must be number, but is string" -> the part after the tag.
    const std::string w = e.what();
    const size_t at = w.find("] ");
    std::fprintf(stderr, "fp4lab: error: malformed input: %s\n",
                 (at == std::string::npos ? w : w.substr(at + 2)).c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "fp4lab: error: out of host memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fp4lab: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
