#include "serve/request_stream.h"

#include <algorithm>

namespace fp4lab::serve {

void RequestStream::push(const std::string& text, int completion_tokens) {
  {
    const std::lock_guard<std::mutex> l(mu_);
    const auto now = Clock::now();
    if (!t_.first_token) t_.first_token = now;
    t_.last_token = now;
    text_ += text;
    tokens_ = completion_tokens;
    news_ = true;
  }
  cv_.notify_all();
}

void RequestStream::finish(const std::string& text, int completion_tokens, const std::string& reason) {
  {
    const std::lock_guard<std::mutex> l(mu_);
    if (done_) return;
    text_ += text;
    tokens_ = completion_tokens;
    done_ = news_ = true;
    reason_ = reason;
  }
  cv_.notify_all();
}

void RequestStream::fail(const std::string& message) {
  {
    const std::lock_guard<std::mutex> l(mu_);
    if (done_) return;
    done_ = news_ = true;
    reason_ = "error";
    error_ = message;
  }
  cv_.notify_all();
}

bool RequestStream::read(Update& u, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  if (!cv_.wait_for(l, timeout, [&] { return news_; })) return false;
  u.text = std::move(text_);
  text_.clear();
  u.completion_tokens = tokens_;
  u.done = done_;
  u.finish_reason = reason_;
  u.error = error_;
  news_ = false;
  return true;
}

void RequestStream::set_arrival(Clock::time_point t, int prompt_tokens) {
  const std::lock_guard<std::mutex> l(mu_);
  t_.arrived = t_.admitted = t;
  t_.prompt_tokens = prompt_tokens;
}

void RequestStream::mark_admitted() {
  const std::lock_guard<std::mutex> l(mu_);
  t_.admitted = Clock::now();
}

void RequestStream::mark_sent() {
  const std::lock_guard<std::mutex> l(mu_);
  const auto now = Clock::now();
  if (!t_.first_sent) t_.first_sent = now;
  t_.last_sent = now;
}

bool RequestStream::leave() {
  return ++left_ == 2;
}

RequestStream::Times RequestStream::times() const {
  const std::lock_guard<std::mutex> l(mu_);
  Times t = t_;
  t.completion_tokens = tokens_;
  t.reason = reason_;
  return t;
}

ServeQueue::Push ServeQueue::push(ServeJob j) {
  {
    const std::lock_guard<std::mutex> l(mu_);
    if (closed_) return Push::Closed;
    if (in_system_ >= max_) return Push::Full;
    ++in_system_;
    q_.push_back(std::move(j));
  }
  cv_.notify_all();
  return Push::Ok;
}

std::vector<ServeJob> ServeQueue::take(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  // A busy engine only collects what is there: a timed wait, even of zero, sleeps in the kernel, and the
  // timer's slack (50 µs for a normal thread) cost every decode step ~55 µs (H100, kernel-notes #84).
  if (timeout.count() > 0) cv_.wait_for(l, timeout, [&] { return !q_.empty() || woken_; });
  woken_ = false;
  std::vector<ServeJob> out(std::make_move_iterator(q_.begin()), std::make_move_iterator(q_.end()));
  q_.clear();
  return out;
}

void ServeQueue::release() {
  const std::lock_guard<std::mutex> l(mu_);
  if (in_system_ > 0) --in_system_;
}

void ServeQueue::close() {
  {
    const std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
    woken_ = true;
  }
  cv_.notify_all();
}

bool ServeQueue::closed() const {
  const std::lock_guard<std::mutex> l(mu_);
  return closed_;
}

size_t ServeQueue::queued() const {
  const std::lock_guard<std::mutex> l(mu_);
  return q_.size();
}

std::string TextAssembler::push(int id) {
  if (stopped_) return {};
  if (std::find(stop_ids_.begin(), stop_ids_.end(), id) == stop_ids_.end()) pending_ += stream_.push(id);
  if (stop_.empty()) return std::exchange(pending_, {});
  // The earliest stop string in what is not yet released (the released text held back every possible start
  // of one, so a stop string cannot begin before pending_).
  size_t cut = std::string::npos;
  for (const auto& s : stop_)
    if (!s.empty()) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail of pending_ that is a proper prefix of a stop string.
  size_t hold = 0;
  for (const auto& s : stop_)
    for (size_t k = s.empty() ? 0 : std::min(s.size() - 1, pending_.size()); k > hold; --k)
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string TextAssembler::finish() {
  if (stopped_) return {};
  pending_ += stream_.finish();
  // A stop string may complete in the text only the end releases (an unfinished character at the end).
  size_t cut = std::string::npos;
  for (const auto& s : stop_)
    if (!s.empty()) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) pending_.resize(cut);
  return std::exchange(pending_, {});
}

}  // namespace fp4lab::serve
