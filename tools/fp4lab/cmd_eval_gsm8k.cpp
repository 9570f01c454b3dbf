// `fp4lab eval gsm8k`: GSM8K through the whole pipeline (tokenizer, engine, lm-eval's prompts, stops, filters
// and scoring), resumable from its per-question records file, stored as JSON and in the results DB.
#include "commands.h"
#include "eval/gsm8k_run.h"

namespace fp4lab::cli {

Action add_eval_gsm8k(CLI::App& app) {
  auto o = std::make_shared<Gsm8kRunOptions>();
  app.add_option(
      "--model", o->model,
      "checkpoint directory or preset:NAME (with --endpoint: the model id to request; default: the "
      "server's first)");
  app.add_option("--endpoint", o->endpoint,
                 "score an OpenAI-compatible server instead (http://host:port/v1): the same prompts, greedy, "
                 "lm-eval's stop strings, through /v1/completions");
  app.add_option("--api-key", o->api_key, "with --endpoint: sent as 'Authorization: Bearer KEY'");
  app.add_option("--concurrency", o->concurrency, "with --endpoint: requests in flight")
      ->check(CLI::Range(1, 4096));
  app.add_option("--data", o->data,
                 "directory with GSM8K test.jsonl and train.jsonl (default: fetched once into the cache, "
                 "sha256-checked)");
  app.add_option("--data-url", o->data_url, "where GSM8K is fetched from when --data is not given");
  add_hub_options(app, o->hub);
  app.add_option("--task", o->task, "gsm8k (5-shot) or gsm8k_cot (8-shot chain of thought)")
      ->check(CLI::IsMember({"gsm8k", "gsm8k_cot"}));
  app.add_option("--tokenizer", o->tokenizer, "tokenizer directory (default: the model directory)");
  app.add_option("--backend", o->backend, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--quant", o->quant, "auto (follow the checkpoint), bf16, nvfp4 or fp8 (quantize at load)");
  app.add_option("--limit", o->limit, "first N test questions (0: all 1319)")->check(CLI::NonNegativeNumber);
  app.add_option("--max-new-tokens", o->max_new, "generation budget per question (lm-eval: 256)")
      ->check(CLI::Range(1, 1 << 16));
  add_cuda_run_options(app, o->cuda);
  app.add_option("--batch", o->batch, "sequences decoded together (continuous batching)")
      ->check(CLI::Range(1, 4096));
  add_prefill_tokens_option(app, o->prefill_tokens);
  add_beyond_context_option(app, o->beyond_context);
  app.add_flag("--add-bos", o->add_bos, "prepend the BOS token (lm-eval's default adds no special tokens)");
  app.add_option("--seed", o->seed, "seed of preset weights");
  app.add_option("--threads", o->threads, "CPU threads (0: all cores)");
  app.add_option("--records", o->records,
                 "per-question JSONL, appended as questions finish; an interrupted run resumes from it "
                 "(default: <json>.records.jsonl when --json is given)");
  app.add_option("--json", o->json_out, "write the summary, every option and all records as JSON");
  app.add_option("--db", o->db, "results database");
  app.add_flag("--no-db", o->no_db, "do not store the run in the results database");
  return [o]() { return run_gsm8k_eval(*o); };
}

}  // namespace fp4lab::cli
