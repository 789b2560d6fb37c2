#include "booster.h"

#include <cmath>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "shap_tables.h"

namespace xgbaddon {

uint64_t ReadCount(Napi::Value value, const std::string& what) {
  if (!value.IsNumber()) throw Napi::TypeError::New(value.Env(), what + " must be a number");
  double d = value.As<Napi::Number>().DoubleValue();
  // 2^53 keeps the value exact as a double; real matrices are far smaller.
  if (!(d >= 0) || d != std::floor(d) || d > 9007199254740992.0) {
    throw Napi::RangeError::New(value.Env(), what + " must be a non-negative integer");
  }
  return static_cast<uint64_t>(d);
}

DenseArg ReadDense(const Napi::CallbackInfo& info, size_t first_index, const char* what) {
  Napi::Env env = info.Env();
  Napi::Value data = info[first_index];
  if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(env, std::string(what) + ".data must be a Float32Array");
  }
  DenseArg arg;
  arg.array = data.As<Napi::TypedArrayOf<float>>();
  arg.rows = ReadCount(info[first_index + 1], std::string(what) + ".rows");
  arg.cols = ReadCount(info[first_index + 2], std::string(what) + ".cols");
  if (arg.cols == 0) throw Napi::RangeError::New(env, std::string(what) + ".cols must be positive");
  if (arg.rows > UINT64_MAX / arg.cols || arg.array.ElementLength() != arg.rows * arg.cols) {
    throw Napi::RangeError::New(env, std::string(what) + ".data length must equal rows*cols");
  }
  return arg;
}

namespace {

Napi::Float32Array ToFloat32Array(Napi::Env env, const std::vector<float>& values) {
  auto out = Napi::Float32Array::New(env, values.size());
  if (!values.empty()) std::memcpy(out.Data(), values.data(), values.size() * sizeof(float));
  return out;
}

// Off-thread prediction. The input is copied on the JS thread so that the caller may
// reuse, mutate or transfer its Float32Array as soon as predictAsync() returns.
// Caveat: XGBoost keeps each booster's last prediction in a per-thread buffer that is
// only released when the booster is freed on that same thread; boosters are freed on
// the JS thread, so each pool thread that served a booster keeps one such buffer until
// a later booster happens to reuse the address. Bounded, but not zero, per retired model.
class PredictWorker : public Napi::AsyncWorker {
 public:
  PredictWorker(Napi::Env env, std::shared_ptr<BoosterState> state, const DenseArg& arg, bool contribs)
      : Napi::AsyncWorker(env, contribs ? "xgboost.predictContribsAsync" : "xgboost.predictAsync"),
        deferred_(Napi::Promise::Deferred::New(env)),
        contribs_(contribs),
        state_(std::move(state)),
        input_(arg.array.Data(), arg.array.Data() + arg.array.ElementLength()),
        rows_(arg.rows),
        cols_(arg.cols) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      std::shared_lock<std::shared_mutex> lock(state_->mutex);
      if (contribs_) {
        PredictContribsDense(state_.get(), input_.data(), rows_, cols_, &output_);
      } else {
        PredictDense(state_.get(), input_.data(), rows_, cols_, &output_);
      }
    } catch (const std::exception& e) {
      SetError(e.what());
    }
    input_ = std::vector<float>();
  }

  void OnOK() override { deferred_.Resolve(ToFloat32Array(Env(), output_)); }

  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  bool contribs_;
  std::shared_ptr<BoosterState> state_;
  std::vector<float> input_;
  std::vector<float> output_;
  uint64_t rows_;
  uint64_t cols_;
};

// Parses a model on the thread pool: XGBoost takes ~0.4 s for the 600-tree JSON model, which on the
// JS thread would stall every request meanwhile.
class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, std::string json)
      : Napi::AsyncWorker(env, "xgboost.loadJsonAsync"),
        deferred_(Napi::Promise::Deferred::New(env)),
        json_(std::move(json)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      // XGBoost sniffs the first byte to tell JSON from its binary formats.
      size_t start = json_.find_first_not_of(" \t\r\n");
      if (start == std::string::npos) throw XgbError("json must not be empty");
      Check(XGBoosterCreate(nullptr, 0, owner_.out()), "XGBoosterCreate");
      Check(XGBoosterLoadModelFromBuffer(owner_.get(), json_.data() + start, json_.size() - start),
            "XGBoosterLoadModelFromBuffer");
    } catch (const std::exception& e) {
      owner_.Reset();
      SetError(e.what());
    }
    json_ = std::string();
  }

  void OnOK() override {
    deferred_.Resolve(NativeBooster::NewInstance(Env(), std::make_shared<BoosterState>(owner_.release())));
  }

  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string json_;
  BoosterOwner owner_;
};

const char* const kImportanceTypes[] = {"gain", "weight", "cover", "total_gain", "total_cover"};

}  // namespace

Napi::Function NativeBooster::DefineClass(Napi::Env env) {
  return ObjectWrap<NativeBooster>::DefineClass(
      env, "NativeBooster",
      {
          StaticMethod<&NativeBooster::LoadJson>("loadJson"),
          StaticMethod<&NativeBooster::LoadJsonAsync>("loadJsonAsync"),
          InstanceMethod<&NativeBooster::SaveJson>("saveJson"),
          InstanceMethod<&NativeBooster::Predict>("predict"),
          InstanceMethod<&NativeBooster::PredictAsync>("predictAsync"),
          InstanceMethod<&NativeBooster::PredictContribs>("predictContribs"),
          InstanceMethod<&NativeBooster::PredictContribsAsync>("predictContribsAsync"),
          InstanceMethod<&NativeBooster::FeatureScore>("featureScore"),
          InstanceMethod<&NativeBooster::SetFeatureNames>("setFeatureNames"),
          InstanceMethod<&NativeBooster::NumFeatures>("numFeatures"),
          InstanceMethod<&NativeBooster::SetParam>("setParam"),
          InstanceMethod<&NativeBooster::Dispose>("dispose"),
      });
}

Napi::Object NativeBooster::NewInstance(Napi::Env env, std::shared_ptr<BoosterState> state) {
  auto* data = env.GetInstanceData<AddonData>();
  return data->booster_constructor.New({Napi::External<std::shared_ptr<BoosterState>>::New(env, &state)});
}

NativeBooster::NativeBooster(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeBooster>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "NativeBooster cannot be constructed from JavaScript");
  }
  state_ = *info[0].As<Napi::External<std::shared_ptr<BoosterState>>>().Data();
}

std::shared_ptr<BoosterState> NativeBooster::Live(Napi::Env env) const {
  if (!state_) throw Napi::Error::New(env, "Booster has been disposed and can no longer be used");
  return state_;
}

Napi::Value NativeBooster::LoadJson(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "json must be a string");
  std::string json = info[0].As<Napi::String>().Utf8Value();
  return TranslateErrors(env, [&]() {
    BoosterOwner owner;
    Check(XGBoosterCreate(nullptr, 0, owner.out()), "XGBoosterCreate");
    Check(XGBoosterLoadModelFromBuffer(owner.get(), json.data(), json.size()), "XGBoosterLoadModelFromBuffer");
    return NewInstance(env, std::make_shared<BoosterState>(owner.release()));
  });
}

Napi::Value NativeBooster::LoadJsonAsync(const Napi::CallbackInfo& info) {
  auto* worker = new LoadWorker(info.Env(), ReadModelBytes(info[0], "json"));
  auto promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value NativeBooster::SaveJson(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto state = Live(env);
  return TranslateErrors(env, [&]() {
    std::shared_lock<std::shared_mutex> lock(state->mutex);
    bst_ulong len = 0;
    const char* buf = nullptr;
    Check(XGBoosterSaveModelToBuffer(state->owner.get(), "{\"format\":\"json\"}", &len, &buf),
          "XGBoosterSaveModelToBuffer");
    return Napi::String::New(env, buf, len);
  });
}

// Predictions (contribs false) or per-feature contributions (true) of a dense matrix, on the calling thread.
Napi::Value NativeBooster::RunPredict(const Napi::CallbackInfo& info, bool contribs) {
  Napi::Env env = info.Env();
  auto state = Live(env);
  DenseArg arg = ReadDense(info, 0, "matrix");
  return TranslateErrors(env, [&]() {
    std::vector<float> out;
    {
      std::shared_lock<std::shared_mutex> lock(state->mutex);
      if (contribs) {
        PredictContribsDense(state.get(), arg.array.Data(), arg.rows, arg.cols, &out);
      } else {
        PredictDense(state.get(), arg.array.Data(), arg.rows, arg.cols, &out);
      }
    }
    return ToFloat32Array(env, out);
  });
}

// The same on the libuv thread pool: a promise of the Float32Array.
Napi::Value NativeBooster::QueuePredict(const Napi::CallbackInfo& info, bool contribs) {
  Napi::Env env = info.Env();
  auto state = Live(env);
  DenseArg arg = ReadDense(info, 0, "matrix");
  auto* worker = new PredictWorker(env, std::move(state), arg, contribs);
  auto promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value NativeBooster::Predict(const Napi::CallbackInfo& info) { return RunPredict(info, false); }
Napi::Value NativeBooster::PredictAsync(const Napi::CallbackInfo& info) { return QueuePredict(info, false); }
Napi::Value NativeBooster::PredictContribs(const Napi::CallbackInfo& info) { return RunPredict(info, true); }
Napi::Value NativeBooster::PredictContribsAsync(const Napi::CallbackInfo& info) {
  return QueuePredict(info, true);
}

Napi::Value NativeBooster::FeatureScore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto state = Live(env);
  std::string type = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  bool known = false;
  for (const char* t : kImportanceTypes) known = known || type == t;
  if (!known) {
    throw Napi::RangeError::New(
        env, "importanceType must be one of gain, weight, cover, total_gain, total_cover");
  }
  return TranslateErrors(env, [&]() {
    std::shared_lock<std::shared_mutex> lock(state->mutex);
    std::string config = "{\"importance_type\":\"" + type + "\"}";
    bst_ulong n_features = 0;
    const char** features = nullptr;
    bst_ulong dim = 0;
    const bst_ulong* shape = nullptr;
    const float* scores = nullptr;
    Check(XGBoosterFeatureScore(state->owner.get(), config.c_str(), &n_features, &features, &dim, &shape,
                                &scores),
          "XGBoosterFeatureScore");
    uint64_t n_scores = dim == 0 ? 0 : 1;
    for (bst_ulong i = 0; i < dim; ++i) n_scores *= shape[i];
    // Multi-class gblinear yields an [n_features, n_classes] matrix; a flat record
    // cannot represent it without silently picking one class.
    if (n_scores != n_features) {
      throw Napi::Error::New(env, "featureScore: per-class scores (multi-class gblinear) are not supported");
    }
    // [names, scores] rather than an object: the wrapper builds the record with
    // Object.fromEntries, which is safe for any feature name (even "__proto__").
    Napi::Array names = Napi::Array::New(env, n_features);
    Napi::Array values = Napi::Array::New(env, n_features);
    for (bst_ulong i = 0; i < n_features; ++i) {
      names.Set(static_cast<uint32_t>(i), Napi::String::New(env, features[i]));
      values.Set(static_cast<uint32_t>(i), Napi::Number::New(env, scores[i]));
    }
    Napi::Array out = Napi::Array::New(env, 2);
    out.Set(0u, names);
    out.Set(1u, values);
    return out;
  });
}

void NativeBooster::SetFeatureNames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto state = Live(env);
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "names must be an array of strings");
  auto array = info[0].As<Napi::Array>();
  std::vector<std::string> names;
  names.reserve(array.Length());
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value v = array.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, "names[" + std::to_string(i) + "] must be a string");
    names.push_back(v.As<Napi::String>().Utf8Value());
  }
  std::vector<const char*> ptrs;
  ptrs.reserve(names.size());
  for (const auto& n : names) ptrs.push_back(n.c_str());
  TranslateErrors(env, [&]() {
    std::unique_lock<std::shared_mutex> lock(state->mutex);
    bst_ulong n_features = 0;
    Check(XGBoosterGetNumFeature(state->owner.get(), &n_features), "XGBoosterGetNumFeature");
    // XGBoost indexes this list by feature id when reporting scores without checking
    // its length, so a short list would read out of bounds.
    if (names.size() != n_features) {
      throw XgbError("names length " + std::to_string(names.size()) + " does not match numFeatures " +
                     std::to_string(n_features));
    }
    Check(XGBoosterSetStrFeatureInfo(state->owner.get(), "feature_name", ptrs.data(), ptrs.size()),
          "XGBoosterSetStrFeatureInfo");
  });
}

Napi::Value NativeBooster::NumFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto state = Live(env);
  return TranslateErrors(env, [&]() {
    std::shared_lock<std::shared_mutex> lock(state->mutex);
    bst_ulong n = 0;
    Check(XGBoosterGetNumFeature(state->owner.get(), &n), "XGBoosterGetNumFeature");
    return Napi::Number::New(env, static_cast<double>(n));
  });
}

void NativeBooster::SetParam(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto state = Live(env);
  if (!info[0].IsString() || !info[1].IsString()) {
    throw Napi::TypeError::New(env, "setParam expects (name: string, value: string)");
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string value = info[1].As<Napi::String>().Utf8Value();
  TranslateErrors(env, [&]() {
    // Exclusive: changing a parameter re-configures the learner on next use, which
    // must not race with predictions running on worker threads.
    std::unique_lock<std::shared_mutex> lock(state->mutex);
    Check(XGBoosterSetParam(state->owner.get(), name.c_str(), value.c_str()), "XGBoosterSetParam");
  });
}

void NativeBooster::Dispose(const Napi::CallbackInfo&) { state_.reset(); }

}  // namespace xgbaddon
