#include "shap_tables.h"

#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "booster.h"

namespace xgbaddon {

std::string ReadModelBytes(Napi::Value value, const char* what) {
  if (value.IsString()) return value.As<Napi::String>().Utf8Value();
  if (value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array) {
    auto bytes = value.As<Napi::Uint8Array>();
    return std::string(reinterpret_cast<const char*>(bytes.Data()), bytes.ByteLength());
  }
  throw Napi::TypeError::New(value.Env(), std::string(what) + " must be a string or a Uint8Array");
}

namespace {

class BuildWorker : public Napi::AsyncWorker {
 public:
  BuildWorker(Napi::Env env, std::string json, ShapLimits limits)
      : Napi::AsyncWorker(env, "xgboost.buildShapTables"),
        deferred_(Napi::Promise::Deferred::New(env)),
        json_(std::move(json)),
        limits_(limits) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      tables_ = BuildShapTables(json_.data(), json_.size(), limits_);
    } catch (const ShapDeclined& e) {
      declined_ = true;
      SetError(e.what());
    } catch (const std::exception& e) {
      SetError(e.what());
    }
    json_ = std::string();
  }

  void OnOK() override { deferred_.Resolve(NativeShapTables::NewInstance(Env(), std::move(tables_))); }

  void OnError(const Napi::Error& error) override {
    Napi::Object value = error.Value();
    value.Set("declined", Napi::Boolean::New(Env(), declined_));
    deferred_.Reject(value);
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string json_;
  ShapLimits limits_;
  std::shared_ptr<const ShapTables> tables_;
  bool declined_ = false;
};

class ContribsWorker : public Napi::AsyncWorker {
 public:
  ContribsWorker(Napi::Env env, std::shared_ptr<const ShapTables> tables, const DenseArg& arg)
      : Napi::AsyncWorker(env, "xgboost.shapContributionsAsync"),
        deferred_(Napi::Promise::Deferred::New(env)),
        tables_(std::move(tables)),
        input_(arg.array.Data(), arg.array.Data() + arg.array.ElementLength()),
        rows_(arg.rows) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      output_.resize(rows_ * (tables_->num_features + 1));
      tables_->Contributions(input_.data(), rows_, output_.data());
    } catch (const std::exception& e) {
      SetError(e.what());
    }
    input_ = std::vector<float>();
  }

  void OnOK() override {
    auto out = Napi::Float32Array::New(Env(), output_.size());
    if (!output_.empty()) std::memcpy(out.Data(), output_.data(), output_.size() * sizeof(float));
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<const ShapTables> tables_;
  std::vector<float> input_;
  std::vector<float> output_;
  uint64_t rows_;
};

DenseArg ReadRows(const Napi::CallbackInfo& info, const ShapTables& tables) {
  DenseArg arg = ReadDense(info, 0, "matrix");
  if (arg.cols != tables.num_features) {
    throw Napi::RangeError::New(info.Env(), "matrix.cols " + std::to_string(arg.cols) +
                                                " does not match the tables' " +
                                                std::to_string(tables.num_features) + " features");
  }
  return arg;
}

}  // namespace

Napi::Function NativeShapTables::DefineClass(Napi::Env env) {
  return ObjectWrap<NativeShapTables>::DefineClass(
      env, "NativeShapTables",
      {
          InstanceMethod<&NativeShapTables::Contributions>("contributions"),
          InstanceMethod<&NativeShapTables::ContributionsAsync>("contributionsAsync"),
          InstanceMethod<&NativeShapTables::Stats>("stats"),
          InstanceMethod<&NativeShapTables::Dispose>("dispose"),
      });
}

Napi::Object NativeShapTables::NewInstance(Napi::Env env, std::shared_ptr<const ShapTables> tables) {
  auto* data = env.GetInstanceData<AddonData>();
  return data->shap_tables_constructor.New(
      {Napi::External<std::shared_ptr<const ShapTables>>::New(env, &tables)});
}

NativeShapTables::NativeShapTables(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeShapTables>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "NativeShapTables cannot be constructed from JavaScript");
  }
  tables_ = *info[0].As<Napi::External<std::shared_ptr<const ShapTables>>>().Data();
}

std::shared_ptr<const ShapTables> NativeShapTables::Live(Napi::Env env) const {
  if (!tables_) throw Napi::Error::New(env, "TreeSHAP tables have been disposed and can no longer be used");
  return tables_;
}

// On the calling thread, straight into the returned array: for the few rows a request explains.
Napi::Value NativeShapTables::Contributions(const Napi::CallbackInfo& info) {
  auto tables = Live(info.Env());
  DenseArg arg = ReadRows(info, *tables);
  auto out = Napi::Float32Array::New(info.Env(), arg.rows * (tables->num_features + 1));
  tables->Contributions(arg.array.Data(), arg.rows, out.Data());
  return out;
}

Napi::Value NativeShapTables::ContributionsAsync(const Napi::CallbackInfo& info) {
  auto tables = Live(info.Env());
  DenseArg arg = ReadRows(info, *tables);
  auto* worker = new ContribsWorker(info.Env(), std::move(tables), arg);
  auto promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value NativeShapTables::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto tables = Live(env);
  Napi::Object out = Napi::Object::New(env);
  out.Set("numFeatures", Napi::Number::New(env, tables->num_features));
  out.Set("bias", Napi::Number::New(env, tables->bias));
  out.Set("tableBytes", Napi::Number::New(env, static_cast<double>(tables->TableBytes())));
  out.Set("leaves", Napi::Number::New(env, static_cast<double>(tables->leaves)));
  return out;
}

void NativeShapTables::Dispose(const Napi::CallbackInfo&) { tables_.reset(); }

Napi::Value BuildShapTablesAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string json = ReadModelBytes(info[0], "model");
  ShapLimits limits;
  double max_path = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : NAN;
  if (!(max_path >= 1 && max_path <= 24) || max_path != std::floor(max_path)) {
    throw Napi::RangeError::New(env, "maxPathFeatures must be an integer in [1, 24]");
  }
  limits.max_path_features = static_cast<int>(max_path);
  limits.max_table_bytes = ReadCount(info[2], "maxTableBytes");
  auto* worker = new BuildWorker(env, std::move(json), limits);
  auto promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace xgbaddon
