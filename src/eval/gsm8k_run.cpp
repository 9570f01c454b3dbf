#include "eval/gsm8k_run.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "common/error.h"
#include "common/interrupt.h"
#include "common/sha256.h"
#include "engine/generate.h"
#include "eval/gsm8k.h"
#include "common/json_util.h"
#include "io/openai_client.h"
#include "model/presets.h"
#include "model/weights.h"
#include "report/results_db.h"
#include "tokenizer/tokenizer.h"

#include "common/units.h"
#include "engine/memory_report.h"
#include "engine/run_environment.h"
#include "engine/session.h"

namespace fp4lab {

namespace {

// GSM8K as openai/grade-school-math publishes it, checked by sha256, fetched once into the cache.
constexpr const char* kGsm8kTestSha = "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14";
constexpr const char* kGsm8kTrainSha = "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465";

std::string gsm8k_data_dir(const Gsm8kRunOptions& o) {
  const HubOptions& h = o.hub;
  const std::string dir = hub_cache_dir(h) + "/../fp4lab/datasets/gsm8k";
  for (const auto& [name, sha] :
       {std::pair{"test.jsonl", kGsm8kTestSha}, std::pair{"train.jsonl", kGsm8kTrainSha}}) {
    const std::string dest = dir + "/" + name;
    if (std::filesystem::exists(dest)) continue;
    if (h.offline) throw Error("offline: GSM8K " + std::string(name) + " is not in " + dir + "; pass --data");
    std::fprintf(stderr, "gsm8k: fetching %s/%s\n", o.data_url.c_str(), name);
    hub_download_file(o.data_url + "/" + name, dest, 0, sha, h);
  }
  return dir;
}

std::string fmt_duration(double s) {
  char b[32];
  if (s >= 3600)
    std::snprintf(b, sizeof b, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else
    std::snprintf(b, sizeof b, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  return b;
}

// The options a stored record depends on: a records file written under other ones cannot be resumed.
json record_key(const Gsm8kRunOptions& o, const Tokenizer* tok) {
  json k{{"model", o.model},     {"quant", o.quant}, {"task", o.task}, {"max_new_tokens", o.max_new},
         {"add_bos", o.add_bos}, {"seed", o.seed}};
  k["tokenizer"] = tok ? json(tok->describe()) : json(nullptr);
  if (!o.endpoint.empty()) k["endpoint"] = o.endpoint;
  return k;
}

}  // namespace

int run_gsm8k_eval(Gsm8kRunOptions o) {
  namespace fs = std::filesystem;
  const Gsm8kTask task = parse_gsm8k_task(o.task);
  SessionOptions session{o.backend, o.threads, o.cuda};
  check_session_options(session);
  if (o.data.empty()) o.data = gsm8k_data_dir(o);
  const bool remote = !o.endpoint.empty();
  if (!remote && o.model.empty()) throw Error("--model is required (or --endpoint URL to score a server)");
  std::optional<OpenAIClient> client;
  if (remote) {
    client.emplace(o.endpoint, o.api_key);
    if (o.model.empty()) o.model = client->first_model();
  }
  const std::string model_path = remote ? o.model : resolve_model_arg(o.model, o.hub);
  const auto test = read_gsm8k_jsonl(o.data + "/test.jsonl");
  std::vector<Gsm8kItem> train;
  std::vector<std::vector<size_t>> shots;
  if (task == Gsm8kTask::FiveShot) {
    train = read_gsm8k_jsonl(o.data + "/train.jsonl");
    shots = gsm8k_fewshot_indices(test.size(), train.size());
  }
  if (o.tokenizer.empty() && !remote) {
    if (is_preset_ref(o.model))
      throw Error("--tokenizer is required with a preset (presets carry no tokenizer)");
    o.tokenizer = model_path;
  }
  // A server tokenizes itself: the tokenizer is needed only to run a model here.
  std::optional<Tokenizer> tok_opt;
  if (!o.tokenizer.empty()) tok_opt.emplace(Tokenizer::from_dir(o.tokenizer));
  const Tokenizer* tokp = tok_opt ? &*tok_opt : nullptr;
  const size_t n = o.limit > 0 ? std::min<size_t>(static_cast<size_t>(o.limit), test.size()) : test.size();

  // Resume: records already written under the same options are kept.
  if (o.records.empty() && !o.json_out.empty()) o.records = o.json_out + ".records.jsonl";
  const json key = record_key(o, tokp);
  std::map<size_t, json> done;
  bool needs_newline = false;
  if (!o.records.empty() && fs::exists(o.records)) {
    std::ifstream in(o.records);
    std::string line;
    size_t lineno = 0;
    uint64_t keep = 0;  // bytes of the records file that hold whole lines
    while (std::getline(in, line)) {
      ++lineno;
      const bool whole = !in.eof();  // the line ended with its newline
      if (line.empty()) {
        keep += whole;
        continue;
      }
      json r;
      try {
        r = parse_json_untrusted(line, o.records);
      } catch (const Error&) {
        if (in.peek() == EOF) break;  // a line cut by an interrupted write: redo that question
        throw;
      }
      keep += line.size() + (whole ? 1 : 0);
      needs_newline = !whole;
      if (lineno == 1) {
        if (!r.contains("key") || r["key"] != key)
          throw Error(o.records + ": written with other options (" +
                      (r.contains("key") ? r["key"].dump() : "?") + "); use another --records file");
        continue;
      }
      done[r.at("id").get<size_t>()] = r;
    }
    in.close();
    // A torn last line (a kill or a full disk mid-write) is cut, so the next record starts on a line of
    // its own; a last record that lost only its newline gets it back before the next.
    if (keep < fs::file_size(o.records)) {
      std::fprintf(stderr, "gsm8k: cutting a torn last line from %s\n", o.records.c_str());
      fs::resize_file(o.records, keep);
    }
    std::fprintf(stderr, "gsm8k: resuming, %zu of %zu questions already in %s\n", done.size(), n,
                 o.records.c_str());
  }
  std::ofstream rec;
  if (!o.records.empty()) {
    const bool fresh = !fs::exists(o.records) || fs::file_size(o.records) == 0;
    rec.open(o.records, std::ios::app);
    if (!rec) throw Error(o.records + ": cannot write");
    if (fresh) rec << json{{"key", key}}.dump() << "\n" << std::flush;
    if (needs_newline) rec << "\n" << std::flush;
    if (!rec) throw Error(o.records + ": write failed (disk full?)");
  }

  auto stops = gsm8k_stop_strings(task);
  const QuantMode mode = parse_quant_mode(o.quant);
  int preset_vocab = 0;
  if (!remote && is_preset_ref(o.model)) {
    const auto p = find_preset(o.model);
    // Synthetic weights would otherwise sample ids the tokenizer cannot write out.
    if (p && tokp->vocab_size() != p->config.vocab_size) {
      preset_vocab = tokp->vocab_size();
      std::fprintf(stderr,
                   "gsm8k: %s has %d tokens; the preset's synthetic embedding and lm_head are sized to it\n",
                   o.tokenizer.c_str(), preset_vocab);
    }
  }
  json doc;
  run_environment(doc, o.backend == "cuda");
  doc["schema"] = "fp4lab.gsm8k/1";
  doc["options"] = {{"model", o.model},
                    {"backend", o.backend},
                    {"quant", o.quant},
                    {"data", o.data},
                    {"task", o.task},
                    {"tokenizer", o.tokenizer},
                    {"limit", o.limit},
                    {"max_new_tokens", o.max_new},
                    {"add_bos", o.add_bos},
                    {"seed", o.seed},
                    {"threads", o.threads},
                    {"chat", false},
                    {"fewshot_seed", 1234},
                    {"batch", o.batch},
                    {"prefill_tokens", o.prefill_tokens},
                    {"beyond_context", o.beyond_context},
                    {"endpoint", o.endpoint},
                    {"concurrency", o.concurrency}};
  echo_cuda_run_options(doc["options"], o.cuda);
  doc["tokenizer"] = tokp ? json(tokp->describe()) : json(nullptr);

  InterruptGuard guard;  // Ctrl-C: no new questions are started, the ones in flight are recorded
  const auto t_start = std::chrono::steady_clock::now();
  int generated_tokens = 0, prompt_tokens = 0;
  double gen_s = 0, prefill_s = 0, decode_s = 0;
  // Set up once from the model's config: the stop strings and every pending question's prompt, with the
  // callbacks that score and record each as it finishes.
  std::once_flag setup_once;
  GenerateOptions g;
  size_t finished = 0, todo = 0, ran = 0;
  int strict_ok = 0, flex_ok = 0;
  std::vector<size_t> qids;
  std::vector<std::vector<int>> prompts;
  std::vector<std::string> hashes;
  std::function<void(size_t, const std::string&, size_t, const std::string&, size_t)> record;
  // The questions still to run, with the records already kept counted into the running totals.
  auto pending_questions = [&] {
    std::vector<size_t> pending;
    for (size_t i = 0; i < n; ++i)
      if (!done.count(i)) pending.push_back(i);
    todo = pending.size();
    finished = done.size();
    for (const auto& [i, r] : done) {
      strict_ok += r["correct"]["strict-match"] == true;
      flex_ok += r["correct"]["flexible-extract"] == true;
    }
    return pending;
  };
  auto prompt_text = [&](size_t i) {
    std::vector<const Gsm8kItem*> ex;
    if (task == Gsm8kTask::FiveShot)
      for (size_t k : shots[i]) ex.push_back(&train[k]);
    return gsm8k_prompt(task, test[i], ex);
  };
  auto setup = [&](const ModelConfig& cfg) {
    if (tokp->vocab_size() > cfg.vocab_size)
      throw Error("tokenizer " + o.tokenizer + " has " + std::to_string(tokp->vocab_size()) +
                  " tokens but the model's vocabulary is " + std::to_string(cfg.vocab_size));
    if (o.add_bos && cfg.bos_id < 0) throw Error("--add-bos: the model config names no BOS token");
    for (int e : cfg.eos_ids)
      if (auto t = tokp->id_token(e)) stops.push_back(*t);  // lm-eval adds the EOS text to `until`
    g.max_new_tokens = o.max_new;
    g.stop_ids = cfg.eos_ids;
    g.sampling.greedy = true;
    g.should_stop = [&](size_t, const std::vector<int>& ids) {
      const std::string text = tokp->decode(ids, true);
      return cut_at_stop(text, stops).size() != text.size();
    };
    // Every pending question's prompt, then one continuous-batching run that records each as it finishes.
    for (size_t i : pending_questions()) {
      const std::string prompt = prompt_text(i);
      std::vector<int> ids;
      if (o.add_bos) ids.push_back(cfg.bos_id);
      const auto enc = tokp->encode(prompt);
      ids.insert(ids.end(), enc.begin(), enc.end());
      qids.push_back(i);
      prompts.push_back(std::move(ids));
      hashes.push_back(sha256_hex(prompt));
    }
    g.max_batch = o.batch;
    g.prefill_tokens = o.prefill_tokens;
    g.beyond_context = o.beyond_context;
    // Under tensor parallelism the ranks must admit the same prompts: a Ctrl-C seen by one rank only would
    // split them, so the run goes on to the end (a second Ctrl-C exits).
    if (o.cuda.tp == 1) g.cancelled = [] { return interrupted(); };
    g.on_finish = [&](size_t b, const GenerateResult& gr) {
      record(qids[b], hashes[b], prompts[b].size(), tokp->decode(gr.new_ids[b], true), gr.new_ids[b].size());
    };
  };
  // Scores one finished question, appends its record and shows the running accuracy.
  std::mutex record_mu;
  record = [&](size_t i, const std::string& hash, size_t n_prompt, const std::string& text,
               size_t n_generated) {
    const std::lock_guard<std::mutex> l(record_mu);
    const std::string completion = cut_at_stop(text, stops);
    const std::string target = gsm8k_target(task, test[i]);
    const Gsm8kScore sc = score_gsm8k(task, completion, target);
    json r = {{"id", i},
              {"prompt_sha256", hash},
              {"prompt_tokens", n_prompt},
              {"completion", completion},
              {"generated_tokens", n_generated},
              {"target", target},
              {"extracted", {{"strict-match", sc.strict}, {"flexible-extract", sc.flexible}}},
              {"correct", {{"strict-match", sc.strict_ok}, {"flexible-extract", sc.flexible_ok}}}};
    if (rec.is_open()) {
      rec << r.dump(-1, ' ', false, json::error_handler_t::replace) << "\n" << std::flush;
      if (!rec) throw Error(o.records + ": write failed (disk full?); the records so far are kept");
    }
    done[i] = std::move(r);
    strict_ok += sc.strict_ok;
    flex_ok += sc.flexible_ok;
    ++finished;
    ++ran;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::fprintf(stderr, "\r[gsm8k %s] %zu/%zu  strict %.1f%%  flexible %.1f%%  %.2f q/s  ETA %s   ",
                 o.task.c_str(), finished, n, 100.0 * strict_ok / finished, 100.0 * flex_ok / finished,
                 ran / el, fmt_duration((todo - ran) * el / ran).c_str());
  };
  auto run = [&](auto& model, int rank) {
    std::call_once(setup_once, [&] { setup(model.config()); });
    if (rank != 0) {  // the same generation on another shard; rank 0 scores and records
      GenerateOptions quiet = g;
      quiet.on_finish = nullptr;
      (void)generate(model, prompts, quiet);
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const GenerateResult gr = generate(model, prompts, g);
    gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    generated_tokens = gr.generated_tokens;
    prompt_tokens = gr.prompt_tokens;
    prefill_s = gr.prefill_s;
    decode_s = gr.decode_s;
    std::fprintf(stderr, "\n");
  };
  const auto t_load = std::chrono::steady_clock::now();
  double load_s = 0;
  if (remote) {
    const std::vector<size_t> pending = pending_questions();
    std::atomic<size_t> next{0};
    std::mutex err_mu;
    std::string failure;
    auto fail = [&](const std::string& why) {
      const std::lock_guard<std::mutex> l(err_mu);
      if (failure.empty()) failure = why;
    };
    auto failed = [&] {
      const std::lock_guard<std::mutex> l(err_mu);
      return !failure.empty();
    };
    auto ask = [&](size_t i) {
      const std::string prompt = prompt_text(i);
      // lm-eval's local-completions request: the prompt text, greedy, its `until` as stop strings.
      const json body{{"model", o.model}, {"prompt", prompt}, {"max_tokens", o.max_new},
                      {"temperature", 0}, {"stop", stops},    {"seed", 1234}};
      const HttpReply r = client->post("/completions", body);
      const json j = json::parse(r.body, nullptr, false);
      if (r.status != 200 || j.is_discarded() || !j.contains("choices") || j["choices"].empty())
        throw Error(o.endpoint + ": question " + std::to_string(i) + ": " +
                    (r.status ? "HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 300) : r.error));
      const json usage = j.value("usage", json::object());
      record(i, sha256_hex(prompt), usage.value("prompt_tokens", 0),
             j["choices"][0].value("text", std::string()), usage.value("completion_tokens", 0));
      const std::lock_guard<std::mutex> l(err_mu);
      prompt_tokens += usage.value("prompt_tokens", 0);
      generated_tokens += usage.value("completion_tokens", 0);
    };
    // An error (a bad answer, a records file that cannot be written) stops every worker after its request.
    auto worker = [&] {
      for (size_t k; !interrupted() && !failed() && (k = next++) < pending.size();) {
        try {
          ask(pending[k]);
        } catch (const std::exception& e) {
          fail(e.what());
        }
      }
    };
    std::vector<std::thread> workers;
    for (int w = 0; w < o.concurrency; ++w) workers.emplace_back(worker);
    for (auto& t : workers) t.join();
    gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
    std::fprintf(stderr, "\n");
    if (!failure.empty()) throw Error(failure);
  } else {
    // The prompts first (setup needs only the config), so that the memory plan knows their lengths.
    SessionOptions so = session;
    ModelWeights w = load_model(model_path, mode, o.seed, so.host_weights(), preset_vocab);
    std::call_once(setup_once, [&] { setup(w.config); });
    std::vector<int> lengths;
    for (const auto& p : prompts) lengths.push_back(static_cast<int>(p.size()));
    so.cuda.shape = memory_shape_for(lengths, g.max_new_tokens, g.max_batch, g.prefill_tokens);
    MemoryReport mem;
    if (o.cuda.tp == 1) so.cuda.report = &mem;
    run_session(std::move(w), so, [&](auto& model, auto&, int rank) {
      // The prefill budget the memory plan fits with (lowered only under a limit). The plan is made for one
      // GPU only, so the ranks of a tensor-parallel run, which share g, do not write it.
      if (o.cuda.tp == 1) g.prefill_tokens = mem.fit.prefill_tokens(g.prefill_tokens);
      if (rank == 0)
        load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
      run(model, rank);
    });
    if (o.backend == "cuda" && o.cuda.tp == 1) {
      std::fprintf(stderr, "%s\n", mem.summary().c_str());
      doc["memory"] = memory_report_json(mem);
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

  std::vector<bool> strict, flex;
  json records = json::array();
  for (size_t i = 0; i < n; ++i) {
    auto it = done.find(i);
    if (it == done.end()) continue;
    strict.push_back(it->second["correct"]["strict-match"].get<bool>());
    flex.push_back(it->second["correct"]["flexible-extract"].get<bool>());
    records.push_back(it->second);
  }
  const bool complete = records.size() == n;
  const MeanStderr ms = mean_stderr(strict), mf = mean_stderr(flex);
  std::printf("|  Tasks  |Filter          |n-shot|Metric     |  Value |   |Stderr|\n");
  std::printf("|---------|----------------|-----:|-----------|-------:|---|-----:|\n");
  const int nshot = task == Gsm8kTask::FiveShot ? 5 : 8;
  std::printf("|%-9s|%-16s|%6d|exact_match|%8.4f|±  |%6.4f|\n", o.task.c_str(), "flexible-extract", nshot,
              mf.mean, mf.stderr_);
  std::printf("|%-9s|%-16s|%6d|exact_match|%8.4f|±  |%6.4f|\n", o.task.c_str(), "strict-match", nshot,
              ms.mean, ms.stderr_);
  std::printf(
      "%zu/%zu questions%s; model %s (%s), load %.1f s, wall %.1f s, %d prompt + %d generated tokens "
      "(%.1f generated tok/s)\n",
      records.size(), n, complete ? "" : " (interrupted: rerun the same command to resume)", o.model.c_str(),
      o.quant.c_str(), load_s, wall, prompt_tokens, generated_tokens,
      gen_s > 0 ? generated_tokens / gen_s : 0.0);
  doc["complete"] = complete;
  doc["summary"] = {{"questions", records.size()},
                    {"strict-match", {{"exact_match", ms.mean}, {"stderr", ms.stderr_}}},
                    {"flexible-extract", {{"exact_match", mf.mean}, {"stderr", mf.stderr_}}}};
  doc["timing"] = {{"load_s", load_s},
                   {"wall_s", wall},
                   {"generate_s", gen_s},
                   {"prefill_s", prefill_s},
                   {"decode_s", decode_s},
                   {"prompt_tokens", prompt_tokens},
                   {"generated_tokens", generated_tokens}};
  doc["records"] = records;
  if (!o.json_out.empty()) {
    write_text_file(o.json_out, doc.dump(1, ' ', false, json::error_handler_t::replace) + "\n");
  }
  if (!o.no_db && complete) {
    ResultsDb db(o.db);
    const auto id = db.insert_run(doc);
    std::fprintf(stderr, "stored as run %lld in %s\n", static_cast<long long>(id), o.db.c_str());
  }
  return interrupted() ? 130 : 0;
}

}  // namespace fp4lab
