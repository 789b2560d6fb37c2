#include "train.h"

#include <atomic>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "booster.h"
#include "common.h"

namespace xgbaddon {
namespace {

struct RoundEval {
  int round = 0;
  double train = std::numeric_limits<double>::quiet_NaN();
  double valid = std::numeric_limits<double>::quiet_NaN();
  bool has_valid = false;
};

// Rounds produced on the worker thread, waiting to be handed to onRound on the JS
// thread. A queue (rather than one heap item per TSFN call) lets OnOK/OnError flush
// whatever the TSFN has not delivered yet, so every onRound call happens before the
// promise settles and in round order.
struct RoundQueue {
  std::mutex mutex;
  std::vector<RoundEval> pending;

  void Push(const RoundEval& e) {
    std::lock_guard<std::mutex> lock(mutex);
    pending.push_back(e);
  }
  std::vector<RoundEval> Take() {
    std::lock_guard<std::mutex> lock(mutex);
    std::vector<RoundEval> out;
    out.swap(pending);
    return out;
  }
};

// Touched only on the JS thread. Shared by the worker and the TSFN's JS function,
// whichever is destroyed last frees it (both are destroyed on the JS thread).
struct CallbackState {
  Napi::FunctionReference on_round;
  Napi::Error error;  // keeps the thrown value alive (wraps primitives, which Node 20 cannot reference)
  bool failed = false;
  std::shared_ptr<RoundQueue> queue;
  std::shared_ptr<std::atomic<bool>> abort;
};

Napi::Object RoundToJs(Napi::Env env, const RoundEval& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("round", Napi::Number::New(env, e.round));
  o.Set("train", Napi::Number::New(env, e.train));
  if (e.has_valid) o.Set("valid", Napi::Number::New(env, e.valid));
  return o;
}

// A throwing onRound stops training (like an abort) and its exception becomes the
// rejection reason; later rounds are not delivered.
void Deliver(Napi::Env env, CallbackState& cb) {
  std::vector<RoundEval> events = cb.queue->Take();
  for (const auto& e : events) {
    if (cb.failed) return;
    try {
      cb.on_round.Call({RoundToJs(env, e)});
    } catch (Napi::Error& err) {
      cb.failed = true;
      cb.error = std::move(err);
      cb.abort->store(true);
    }
  }
}

struct ParsedEval {
  double train = std::numeric_limits<double>::quiet_NaN();
  double valid = std::numeric_limits<double>::quiet_NaN();
  bool has_train = false;
  bool has_valid = false;
  std::string valid_metric;
};

// Parses "[3]\ttrain-rmse:12.3\tvalid-rmse:14.5". XGBoost writes every metric of a
// dataset in eval_metric order, so keeping the last one per dataset selects the last
// configured metric (the one XGBoost's own early stopping watches).
ParsedEval ParseEval(const char* text) {
  ParsedEval out;
  std::string s = text != nullptr ? text : "";
  size_t pos = s.find('\t');
  while (pos != std::string::npos) {
    size_t start = pos + 1;
    size_t end = s.find('\t', start);
    std::string token = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
    pos = end;
    size_t colon = token.rfind(':');
    if (colon == std::string::npos) continue;
    double value = std::strtod(token.c_str() + colon + 1, nullptr);
    if (token.rfind("train-", 0) == 0) {
      out.train = value;
      out.has_train = true;
    } else if (token.rfind("valid-", 0) == 0) {
      out.valid = value;
      out.has_valid = true;
      out.valid_metric = token.substr(6, colon - 6);
    }
  }
  return out;
}

// Mirrors XGBoost's Python early stopping: ranking/AUC-style metrics are maximised,
// everything else minimised. Matching on the name before '@' or '-' keeps "mape"
// (an error, lower is better) apart from "map" / "map@5" / "map-".
bool HigherIsBetter(const std::string& metric) {
  if (metric == "interval-regression-accuracy") return true;
  std::string base = metric.substr(0, metric.find_first_of("@-"));
  return base == "auc" || base == "aucpr" || base == "map" || base == "ndcg" || base == "pre";
}

struct MatrixCopy {
  std::vector<float> data;
  std::vector<float> labels;
  uint64_t rows = 0;
  uint64_t cols = 0;
};

struct TrainInputs {
  std::vector<std::pair<std::string, std::string>> params;
  int rounds = 0;
  int early_stopping = 0;
  bool has_valid = false;
  MatrixCopy train;
  MatrixCopy valid;
  int nthread = 0;
  bool linear = false;
};

void MakeDMatrix(MatrixCopy* m, int nthread, DMatrixOwner* out) {
  Check(XGDMatrixCreateFromMat_omp(m->data.data(), m->rows, m->cols, std::numeric_limits<float>::quiet_NaN(),
                                   out->out(), nthread),
        "XGDMatrixCreateFromMat_omp");
  Check(XGDMatrixSetFloatInfo(out->get(), "label", m->labels.data(), m->labels.size()),
        "XGDMatrixSetFloatInfo");
  // The DMatrix holds its own copy; release ours now to halve peak memory.
  m->data = std::vector<float>();
  m->labels = std::vector<float>();
}

std::string Serialize(BoosterHandle h) {
  bst_ulong len = 0;
  const char* buf = nullptr;
  Check(XGBoosterSerializeToBuffer(h, &len, &buf), "XGBoosterSerializeToBuffer");
  return std::string(buf, len);
}

class TrainWorker : public Napi::AsyncWorker {
 public:
  TrainWorker(Napi::Env env, TrainInputs inputs, Napi::Function on_round,
              std::shared_ptr<std::atomic<bool>> abort)
      : Napi::AsyncWorker(env, "xgboost.train"),
        deferred_(Napi::Promise::Deferred::New(env)),
        in_(std::move(inputs)),
        abort_(std::move(abort)),
        queue_(std::make_shared<RoundQueue>()) {
    if (!on_round.IsEmpty()) {
      cb_ = std::make_shared<CallbackState>();
      cb_->on_round = Napi::Persistent(on_round);
      cb_->queue = queue_;
      cb_->abort = abort_;
      auto cb = cb_;
      Napi::Function deliver =
          Napi::Function::New(env, [cb](const Napi::CallbackInfo& info) { Deliver(info.Env(), *cb); }, "deliverRounds");
      tsfn_ = Napi::ThreadSafeFunction::New(env, deliver, "xgboost.onRound", 0, 1);
      tsfn_active_ = true;
    }
  }

  ~TrainWorker() override { ReleaseTsfn(); }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      Run();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
    // From here on the TSFN only has to flush what is queued, then it can close.
    ReleaseTsfn();
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (cb_) Deliver(env, *cb_);
    if (cb_ && cb_->failed) {
      deferred_.Reject(cb_->error.Value());
      return;
    }
    if (aborted_) {
      Napi::Error err = Napi::Error::New(env, "XGBoost training was aborted");
      err.Set("name", Napi::String::New(env, "AbortError"));
      err.Set("code", Napi::String::New(env, "ABORT_ERR"));
      deferred_.Reject(err.Value());
      return;
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("booster", NativeBooster::NewInstance(env, std::make_shared<BoosterState>(result_.release())));
    result.Set("bestIteration", Napi::Number::New(env, best_iteration_));
    result.Set("rounds", Napi::Number::New(env, static_cast<double>(history_.size())));
    Napi::Array history = Napi::Array::New(env, history_.size());
    for (size_t i = 0; i < history_.size(); ++i) history.Set(static_cast<uint32_t>(i), RoundToJs(env, history_[i]));
    result.Set("history", history);
    deferred_.Resolve(result);
  }

  void OnError(const Napi::Error& error) override {
    if (cb_) Deliver(Env(), *cb_);
    deferred_.Reject(cb_ && cb_->failed ? cb_->error.Value() : error.Value());
  }

 private:
  void ReleaseTsfn() {
    if (tsfn_active_) {
      tsfn_active_ = false;
      tsfn_.Release();
    }
  }

  void Publish(const RoundEval& e) {
    history_.push_back(e);
    if (tsfn_active_) {
      queue_->Push(e);
      // Non-blocking: the training thread must never wait for the JS thread. The queue
      // is unbounded (max size 0), so this only fails while the env is shutting down.
      tsfn_.NonBlockingCall();
    }
  }

  void Run() {
    DMatrixOwner dtrain;
    DMatrixOwner dvalid;
    MakeDMatrix(&in_.train, in_.nthread, &dtrain);
    if (in_.has_valid) MakeDMatrix(&in_.valid, in_.nthread, &dvalid);
    DMatrixHandle mats[2] = {dtrain.get(), dvalid.get()};
    const char* names[2] = {"train", "valid"};
    bst_ulong n_mats = in_.has_valid ? 2 : 1;

    BoosterOwner bst;
    Check(XGBoosterCreate(mats, n_mats, bst.out()), "XGBoosterCreate");
    for (const auto& [key, value] : in_.params) {
      Check(XGBoosterSetParam(bst.get(), key.c_str(), value.c_str()), "XGBoosterSetParam");
    }

    const bool early_stopping = in_.early_stopping > 0 && in_.has_valid;
    bool maximize = false;
    int best = -1;
    double best_score = std::numeric_limits<double>::quiet_NaN();
    std::string best_snapshot;  // gblinear only: it cannot be sliced afterwards
    int done = 0;

    for (int i = 0; i < in_.rounds; ++i) {
      if (abort_->load()) {
        aborted_ = true;
        return;
      }
      Check(XGBoosterUpdateOneIter(bst.get(), i, dtrain.get()), "XGBoosterUpdateOneIter");
      const char* eval_text = nullptr;
      Check(XGBoosterEvalOneIter(bst.get(), i, mats, names, n_mats, &eval_text), "XGBoosterEvalOneIter");
      ParsedEval parsed = ParseEval(eval_text);
      RoundEval e;
      e.round = i;
      e.train = parsed.train;
      e.valid = parsed.valid;
      e.has_valid = in_.has_valid;
      Publish(e);
      done = i + 1;

      if (!early_stopping) continue;
      if (i == 0) {
        if (!parsed.has_valid) {
          throw XgbError("earlyStoppingRounds: XGBoost reported no evaluation metric for valid");
        }
        maximize = HigherIsBetter(parsed.valid_metric);
      }
      bool improved = best < 0 || (std::isnan(best_score) && !std::isnan(parsed.valid)) ||
                      (maximize ? parsed.valid > best_score : parsed.valid < best_score);
      if (improved) {
        best = i;
        best_score = parsed.valid;
        if (in_.linear) best_snapshot = Serialize(bst.get());
      } else if (i - best >= in_.early_stopping) {
        break;
      }
    }
    best_iteration_ = early_stopping ? best : done - 1;

    // Hand back a fresh copy rather than the training learner: the copy carries no
    // prediction caches or gradient buffers sized to the training data, and freeing
    // the original here, on the thread that trained it, also frees the per-thread
    // buffers XGBoost keeps for it (only released on the freeing thread).
    BoosterOwner out;
    if (in_.linear) {
      std::string snapshot = early_stopping ? std::move(best_snapshot) : Serialize(bst.get());
      Check(XGBoosterCreate(nullptr, 0, out.out()), "XGBoosterCreate");
      Check(XGBoosterUnserializeFromBuffer(out.get(), snapshot.data(), snapshot.size()),
            "XGBoosterUnserializeFromBuffer");
    } else {
      Check(XGBoosterSlice(bst.get(), 0, best_iteration_ + 1, 1, out.out()), "XGBoosterSlice");
    }
    bst.Reset();
    result_ = std::move(out);
  }

  Napi::Promise::Deferred deferred_;
  TrainInputs in_;
  std::shared_ptr<std::atomic<bool>> abort_;
  std::shared_ptr<RoundQueue> queue_;
  std::shared_ptr<CallbackState> cb_;
  Napi::ThreadSafeFunction tsfn_;
  bool tsfn_active_ = false;

  // Results, written in Execute() and read in OnOK() (happens-after via libuv).
  bool aborted_ = false;
  std::vector<RoundEval> history_;
  int best_iteration_ = -1;
  BoosterOwner result_;
};

Napi::TypedArrayOf<float> GetFloat32(Napi::Object opts, const char* key) {
  Napi::Value v = opts.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(opts.Env(), std::string(key) + " must be a Float32Array");
  }
  return v.As<Napi::TypedArrayOf<float>>();
}

// Copies a matrix and its labels out of JS memory (the worker thread must not touch
// JS-owned buffers), checking lengths so a bad call cannot read out of bounds.
MatrixCopy CopyMatrix(Napi::Object opts, const char* data_key, const char* labels_key, const char* rows_key,
                      uint64_t cols) {
  Napi::Env env = opts.Env();
  MatrixCopy m;
  auto data = GetFloat32(opts, data_key);
  auto labels = GetFloat32(opts, labels_key);
  m.rows = ReadCount(opts.Get(rows_key), rows_key);
  m.cols = cols;
  if (m.rows == 0) throw Napi::RangeError::New(env, std::string(rows_key) + " must be positive");
  if (m.rows > UINT64_MAX / cols || data.ElementLength() != m.rows * cols) {
    throw Napi::RangeError::New(env, std::string(data_key) + " length must equal rows*cols");
  }
  if (labels.ElementLength() != m.rows) {
    throw Napi::RangeError::New(env, std::string(labels_key) + " length must equal rows");
  }
  m.data.assign(data.Data(), data.Data() + data.ElementLength());
  m.labels.assign(labels.Data(), labels.Data() + labels.ElementLength());
  return m;
}

}  // namespace

Napi::Value Train(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "train expects an options object");
  Napi::Object opts = info[0].As<Napi::Object>();

  TrainInputs in;
  Napi::Value params_value = opts.Get("params");
  if (!params_value.IsArray()) throw Napi::TypeError::New(env, "params must be an array of [name, value] pairs");
  Napi::Array params = params_value.As<Napi::Array>();
  for (uint32_t i = 0; i < params.Length(); ++i) {
    Napi::Value pair = params.Get(i);
    if (!pair.IsArray() || pair.As<Napi::Array>().Length() != 2) {
      throw Napi::TypeError::New(env, "params must be an array of [name, value] pairs");
    }
    Napi::Value k = pair.As<Napi::Array>().Get(0u);
    Napi::Value v = pair.As<Napi::Array>().Get(1u);
    if (!k.IsString() || !v.IsString()) throw Napi::TypeError::New(env, "param names and values must be strings");
    in.params.emplace_back(k.As<Napi::String>().Utf8Value(), v.As<Napi::String>().Utf8Value());
  }
  for (const auto& [key, value] : in.params) {
    if (key == "nthread") in.nthread = std::atoi(value.c_str());
    if (key == "booster") in.linear = value == "gblinear";
  }

  uint64_t rounds = ReadCount(opts.Get("rounds"), "rounds");
  if (rounds == 0 || rounds > INT_MAX) throw Napi::RangeError::New(env, "rounds must be a positive integer");
  in.rounds = static_cast<int>(rounds);
  Napi::Value es_value = opts.Get("earlyStoppingRounds");
  uint64_t es = es_value.IsUndefined() ? 0 : ReadCount(es_value, "earlyStoppingRounds");
  if (es > INT_MAX) throw Napi::RangeError::New(env, "earlyStoppingRounds is too large");
  in.early_stopping = static_cast<int>(es);

  uint64_t cols = ReadCount(opts.Get("cols"), "cols");
  if (cols == 0) throw Napi::RangeError::New(env, "cols must be positive");
  in.train = CopyMatrix(opts, "trainData", "trainLabels", "trainRows", cols);
  Napi::Value valid_data = opts.Get("validData");
  in.has_valid = !valid_data.IsUndefined() && !valid_data.IsNull();
  if (in.has_valid) in.valid = CopyMatrix(opts, "validData", "validLabels", "validRows", cols);

  Napi::Value on_round = opts.Get("onRound");
  Napi::Function on_round_fn;
  if (!on_round.IsUndefined() && !on_round.IsNull()) {
    if (!on_round.IsFunction()) throw Napi::TypeError::New(env, "onRound must be a function");
    on_round_fn = on_round.As<Napi::Function>();
  }

  auto abort = std::make_shared<std::atomic<bool>>(false);
  auto* worker = new TrainWorker(env, std::move(in), on_round_fn, abort);
  Napi::Object job = Napi::Object::New(env);
  job.Set("promise", worker->Promise());
  // Checked by the worker between boosting rounds; a round in progress always finishes.
  job.Set("abort", Napi::Function::New(env, [abort](const Napi::CallbackInfo&) { abort->store(true); }, "abort"));
  worker->Queue();
  return job;
}

}  // namespace xgbaddon
