#include "common.h"

#include <cctype>
#include <cstring>
#include <limits>

namespace xgbaddon {

std::string CleanXgbMessage(const char* raw) {
  std::string msg = raw != nullptr ? raw : "";
  // Drop dmlc's backtrace: it lists library offsets, not anything the caller can act on.
  auto trace = msg.find("Stack trace:");
  if (trace != std::string::npos) msg.erase(trace);
  // Drop a leading "[12:34:56] /path/file.cc:123: " location prefix.
  if (msg.size() > 11 && msg[0] == '[' && msg[9] == ']' && msg[10] == ' ') {
    auto colon_space = msg.find(": ", 11);
    if (colon_space != std::string::npos) {
      // Only strip when the part before ": " looks like "file:line".
      auto line_colon = msg.rfind(':', colon_space - 1);
      bool digits = line_colon != std::string::npos && line_colon > 11 && line_colon + 1 < colon_space;
      for (auto i = line_colon + 1; digits && i < colon_space; ++i) {
        digits = std::isdigit(static_cast<unsigned char>(msg[i])) != 0;
      }
      if (digits) msg.erase(0, colon_space + 2);
    }
  }
  while (!msg.empty() && std::isspace(static_cast<unsigned char>(msg.back())) != 0) msg.pop_back();
  if (msg.empty()) msg = "unknown XGBoost error";
  return msg;
}

void ThrowLastError(const char* function) {
  throw XgbError(std::string(function) + ": " + CleanXgbMessage(XGBGetLastError()));
}

namespace {

// The result lives in XGBoost's per-thread, per-booster buffer and is overwritten by
// the next call on this thread, so it is copied out immediately.
void CopyPrediction(const bst_ulong* shape, bst_ulong dim, const float* result, std::vector<float>* out) {
  uint64_t total = dim == 0 ? 0 : 1;
  for (bst_ulong i = 0; i < dim; ++i) total *= shape[i];
  out->assign(result, result + total);
}

const char* const kPredictConfig =
    "{\"type\":0,\"training\":false,\"iteration_begin\":0,\"iteration_end\":0,"
    "\"strict_shape\":false,\"missing\":NaN,\"cache_id\":0}";

void PredictInplace(BoosterHandle handle, const float* data, uint64_t rows, uint64_t cols,
                    std::vector<float>* out) {
  // __array_interface__ (version 3) pointing at caller-owned memory; XGBoost reads it
  // in place, so `data` must stay valid and unmodified for the duration of the call.
  std::string array = "{\"data\":[" + std::to_string(reinterpret_cast<uintptr_t>(data)) +
                      ",true],\"shape\":[" + std::to_string(rows) + "," + std::to_string(cols) +
                      "],\"strides\":null,\"typestr\":\"<f4\",\"version\":3}";
  const bst_ulong* shape = nullptr;
  bst_ulong dim = 0;
  const float* result = nullptr;
  Check(XGBoosterPredictFromDense(handle, array.c_str(), kPredictConfig, nullptr, &shape, &dim, &result),
        "XGBoosterPredictFromDense");
  CopyPrediction(shape, dim, result, out);
}

void PredictViaDMatrix(BoosterHandle handle, const float* data, uint64_t rows, uint64_t cols,
                       std::vector<float>* out) {
  DMatrixOwner dmat;
  Check(XGDMatrixCreateFromMat(data, rows, cols, std::numeric_limits<float>::quiet_NaN(), dmat.out()),
        "XGDMatrixCreateFromMat");
  const bst_ulong* shape = nullptr;
  bst_ulong dim = 0;
  const float* result = nullptr;
  Check(XGBoosterPredictFromDMatrix(handle, dmat.get(), kPredictConfig, &shape, &dim, &result),
        "XGBoosterPredictFromDMatrix");
  CopyPrediction(shape, dim, result, out);
}

// type 2 is exact TreeSHAP (3 would be Saabas' approximation, which is not additive per path).
const char* const kContribsConfig =
    "{\"type\":2,\"training\":false,\"iteration_begin\":0,\"iteration_end\":0,"
    "\"strict_shape\":false}";

}  // namespace

void PredictContribsDense(BoosterState* state, const float* data, uint64_t rows, uint64_t cols,
                          std::vector<float>* out) {
  DMatrixOwner dmat;
  Check(XGDMatrixCreateFromMat(data, rows, cols, std::numeric_limits<float>::quiet_NaN(), dmat.out()),
        "XGDMatrixCreateFromMat");
  const bst_ulong* shape = nullptr;
  bst_ulong dim = 0;
  const float* result = nullptr;
  Check(XGBoosterPredictFromDMatrix(state->owner.get(), dmat.get(), kContribsConfig, &shape, &dim, &result),
        "XGBoosterPredictFromDMatrix");
  uint64_t total = dim == 0 ? 0 : 1;
  for (bst_ulong i = 0; i < dim; ++i) total *= shape[i];
  // A multi-output model yields [rows, groups, cols+1]; callers index [rows, cols+1] and would
  // silently read another group's values as this row's.
  if (total != rows * (cols + 1)) {
    throw XgbError("contribution prediction returned " + std::to_string(total) + " values, expected " +
                   std::to_string(rows * (cols + 1)) + " (multi-output models are not supported)");
  }
  out->assign(result, result + total);
}

void PredictDense(BoosterState* state, const float* data, uint64_t rows, uint64_t cols,
                  std::vector<float>* out) {
  BoosterHandle handle = state->owner.get();
  if (state->inplace_unsupported.load()) {
    PredictViaDMatrix(handle, data, rows, cols, out);
    return;
  }
  try {
    PredictInplace(handle, data, rows, cols, out);
  } catch (const XgbError& inplace_error) {
    // Report the in-place error if the DMatrix path fails too: the input, not the
    // booster type, is then the likely problem.
    try {
      PredictViaDMatrix(handle, data, rows, cols, out);
    } catch (const XgbError&) {
      throw inplace_error;
    }
    state->inplace_unsupported.store(true);
  }
}

}  // namespace xgbaddon
