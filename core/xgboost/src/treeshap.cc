#include "treeshap.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <utility>

namespace xgbaddon {
namespace {

// ---------------------------------------------------------------------------------------------
// A small JSON reader for XGBoost's model format. libxgboost's own Json is not exported by its C API,
// and the model is read off the event loop, so the few fields the tables need are parsed here. Arrays
// of numbers (the trees' node arrays, the bulk of a model) are kept as plain doubles.

struct JsonValue {
  enum class Kind : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  double number = 0;  // a number, or a bool as 0/1
  std::string text;
  // An array is either all numbers/bools (numeric, in `numbers`) or anything (in `items`).
  bool numeric = false;
  std::vector<double> numbers;
  std::vector<JsonValue> items;
  std::vector<std::pair<std::string, JsonValue>> members;

  const JsonValue* Find(const char* key) const {
    if (kind != Kind::kObject) return nullptr;
    for (const auto& [name, value] : members) {
      if (name == key) return &value;
    }
    return nullptr;
  }
};

class JsonReader {
 public:
  JsonReader(const char* data, size_t size) : p_(data), end_(data + size) {}

  JsonValue ReadDocument() {
    JsonValue v = ReadValue(0);
    SkipSpace();
    if (p_ != end_) Fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void Fail(const char* what) const {
    throw std::runtime_error(std::string("model JSON: ") + what);
  }

  void SkipSpace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  bool Literal(const char* word) {
    size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return false;
    p_ += n;
    return true;
  }

  JsonValue ReadValue(int depth) {
    // XGBoost models nest about 6 deep; the bound keeps a hostile file from overflowing the stack.
    if (depth > 64) Fail("nested too deeply");
    SkipSpace();
    if (p_ == end_) Fail("unexpected end");
    JsonValue v;
    char c = *p_;
    if (c == '{') {
      v.kind = JsonValue::Kind::kObject;
      ++p_;
      SkipSpace();
      if (p_ != end_ && *p_ == '}') {
        ++p_;
        return v;
      }
      for (;;) {
        SkipSpace();
        if (p_ == end_ || *p_ != '"') Fail("expected a member name");
        std::string key = ReadString();
        SkipSpace();
        if (p_ == end_ || *p_ != ':') Fail("expected ':'");
        ++p_;
        v.members.emplace_back(std::move(key), ReadValue(depth + 1));
        SkipSpace();
        if (p_ != end_ && *p_ == ',') {
          ++p_;
          continue;
        }
        if (p_ != end_ && *p_ == '}') {
          ++p_;
          return v;
        }
        Fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = JsonValue::Kind::kArray;
      v.numeric = true;
      ++p_;
      SkipSpace();
      if (p_ != end_ && *p_ == ']') {
        ++p_;
        return v;
      }
      for (;;) {
        JsonValue item = ReadValue(depth + 1);
        bool scalar = item.kind == JsonValue::Kind::kNumber || item.kind == JsonValue::Kind::kBool;
        if (v.numeric && !scalar) {
          // The first non-number: the numbers so far become items.
          v.numeric = false;
          for (double n : v.numbers) {
            JsonValue number;
            number.kind = JsonValue::Kind::kNumber;
            number.number = n;
            v.items.push_back(std::move(number));
          }
          v.numbers.clear();
        }
        if (v.numeric) {
          v.numbers.push_back(item.number);
        } else {
          v.items.push_back(std::move(item));
        }
        SkipSpace();
        if (p_ != end_ && *p_ == ',') {
          ++p_;
          continue;
        }
        if (p_ != end_ && *p_ == ']') {
          ++p_;
          return v;
        }
        Fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = JsonValue::Kind::kString;
      v.text = ReadString();
      return v;
    }
    if (Literal("true")) {
      v.kind = JsonValue::Kind::kBool;
      v.number = 1;
      return v;
    }
    if (Literal("false")) {
      v.kind = JsonValue::Kind::kBool;
      return v;
    }
    if (Literal("null")) return v;
    v.kind = JsonValue::Kind::kNumber;
    // from_chars is locale-independent and rejects the leading '+' JSON forbids.
    auto [next, ec] = std::from_chars(p_, end_, v.number);
    if (ec != std::errc() || next == p_) Fail("expected a value");
    p_ = next;
    return v;
  }

  std::string ReadString() {
    ++p_;  // the opening quote
    std::string out;
    for (;;) {
      if (p_ == end_) Fail("unterminated string");
      char c = *p_++;
      if (c == '"') return out;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (p_ == end_) Fail("unterminated string");
      char e = *p_++;
      switch (e) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'u': {
          if (end_ - p_ < 4) Fail("bad \\u escape");
          unsigned code = 0;
          auto [next, ec] = std::from_chars(p_, p_ + 4, code, 16);
          if (ec != std::errc() || next != p_ + 4) Fail("bad \\u escape");
          p_ += 4;
          // Names and objectives are ASCII; anything else only has to stay distinct from them.
          if (code < 0x80) {
            out.push_back(static_cast<char>(code));
          } else if (code < 0x800) {
            out.push_back(static_cast<char>(0xC0 | (code >> 6)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
          } else {
            out.push_back(static_cast<char>(0xE0 | (code >> 12)));
            out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
          }
          break;
        }
        default: out.push_back(e); break;  // \" \\ \/
      }
    }
  }

  const char* p_;
  const char* end_;
};

// ---------------------------------------------------------------------------------------------
// The tables.

[[noreturn]] void Decline(const std::string& msg) { throw ShapDeclined("fast TreeSHAP: " + msg); }

const JsonValue& Member(const JsonValue& object, const char* key, const std::string& where) {
  const JsonValue* v = object.Find(key);
  if (v == nullptr) throw std::runtime_error("model JSON: " + where + "." + key + " is missing");
  return *v;
}

// A string parameter as XGBoost writes them ("0", "1.8946309E2" or, in 2.x, "[1.8946309E2]").
double NumberParam(const JsonValue* v, double fallback, const std::string& name) {
  if (v == nullptr) return fallback;
  if (v->kind == JsonValue::Kind::kNumber) return v->number;
  std::string text = v->kind == JsonValue::Kind::kString ? v->text : "";
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
  double value = 0;
  auto [next, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || next != text.data() + text.size() || !std::isfinite(value)) {
    Decline(name + " \"" + text + "\" is not a number");
  }
  return value;
}

// XGBoost's base margin for the objectives explanations are defined for (ProbToMargin).
double BaseMargin(const std::string& objective, double base_score) {
  if (objective == "reg:squarederror" || objective == "reg:linear") return base_score;
  if (objective == "count:poisson" || objective == "reg:tweedie") return std::log(base_score);
  Decline("objective \"" + objective + "\" is not supported");
}

struct Tree {
  const std::vector<double>* left;
  const std::vector<double>* right;
  const std::vector<double>* split_index;
  const std::vector<double>* split_condition;
  const std::vector<double>* default_left;
  const std::vector<double>* cover;
  size_t size;
};

const std::vector<double>& NodeArray(const JsonValue& tree, const char* key, size_t t, size_t size) {
  const JsonValue& v = Member(tree, key, "trees[" + std::to_string(t) + "]");
  if (v.kind != JsonValue::Kind::kArray || !v.numeric || (size != 0 && v.numbers.size() != size)) {
    throw std::runtime_error("model JSON: trees[" + std::to_string(t) + "]." + key +
                             " is not an array of one number a node");
  }
  return v.numbers;
}

struct PendingLeaf {
  double value;
  std::vector<int32_t> features;
  std::vector<double> zero;
};

class Builder {
 public:
  Builder(const ShapLimits& limits, uint32_t num_features, ShapTables* out)
      : limits_(limits), num_features_(num_features), out_(out) {}

  void AddTree(const Tree& tree, size_t t) {
    tree_ = &tree;
    t_ = t;
    visits_ = 0;
    out_->bias += MeanOf(0, 0);
    visits_ = 0;
    Walk(0, 0);
  }

  // Second pass: for each leaf, g(S) = w(|S|, d) prod_{j not in S} z_j for S != P, then the subset sum
  // H(A) = sum_{S within A} g(S), scaled by the leaf value. Summed in double, stored as float32.
  void Finish() {
    uint32_t max_d = 0;
    for (const auto& leaf : pending_) max_d = std::max<uint32_t>(max_d, leaf.features.size());
    std::vector<double> fact(max_d + 1, 1.0);
    for (uint32_t i = 1; i <= max_d; ++i) fact[i] = fact[i - 1] * i;
    out_->tables.assign(entries_, 0.0f);
    out_->leaves = pending_.size();
    std::vector<double> h;
    uint64_t off = 0;
    for (const auto& leaf : pending_) {
      uint32_t d = leaf.features.size();
      for (uint32_t j = 0; j < d; ++j) {
        double z = leaf.zero[j];
        out_->slots.push_back(ShapSlot{leaf.features[j], (1 - z) / z});
      }
      uint64_t size = 1ull << d;
      uint64_t full = size - 1;
      h.assign(size, 0.0);
      for (uint64_t set = 0; set < full; ++set) {
        unsigned s = __builtin_popcountll(set);
        double g = fact[s] * fact[d - s - 1] / fact[d];
        for (uint32_t j = 0; j < d; ++j) {
          if ((set & (1ull << j)) == 0) g *= leaf.zero[j];
        }
        h[set] = g;
      }
      // The full set is never looked up (some feature is always left out); 0 keeps the sums clean.
      h[full] = 0;
      for (uint32_t j = 0; j < d; ++j) {
        uint64_t bit = 1ull << j;
        for (uint64_t set = 0; set < size; ++set) {
          if ((set & bit) != 0) h[set] += h[set ^ bit];
        }
      }
      float* table = out_->tables.data() + off;
      for (uint64_t set = 0; set < size; ++set) table[set] = static_cast<float>(h[set] * leaf.value);
      off += size;
    }
    pending_.clear();
  }

 private:
  std::string Where() const { return "tree " + std::to_string(t_); }

  // Bounds every child index and the number of visits, so a malformed tree (out-of-range, shared or
  // cyclic children) is refused instead of read out of bounds or walked forever.
  size_t Child(const std::vector<double>& children, size_t node) {
    double c = children[node];
    if (!(c >= 0) || c >= static_cast<double>(tree_->size) || c != std::floor(c)) {
      throw std::runtime_error("model JSON: " + Where() + " has a child index out of range");
    }
    return static_cast<size_t>(c);
  }

  void Visit(int depth) {
    if (depth > 64 || ++visits_ > tree_->size) Decline(Where() + " is deeper than 64 (or not a tree)");
  }

  bool IsLeaf(size_t node) const { return (*tree_->left)[node] == -1; }

  // Cover-weighted mean leaf value of a subtree, as XGBoost's FillNodeMeanValues computes it.
  double MeanOf(size_t node, int depth) {
    Visit(depth);
    if (IsLeaf(node)) return (*tree_->split_condition)[node];
    size_t left = Child(*tree_->left, node);
    size_t right = Child(*tree_->right, node);
    const auto& cover = *tree_->cover;
    return (MeanOf(left, depth + 1) * cover[left] + MeanOf(right, depth + 1) * cover[right]) / cover[node];
  }

  // First pass: the nodes in preorder and every leaf's path (its distinct features in order of first
  // split, and their zero fractions), checked against the limits before the tables are allocated.
  void Walk(size_t node, int depth) {
    Visit(depth);
    if (IsLeaf(node)) {
      if (features_.size() > static_cast<size_t>(limits_.max_path_features)) {
        Decline("a leaf of " + Where() + " has " + std::to_string(features_.size()) +
                " distinct path features (limit " + std::to_string(limits_.max_path_features) + ")");
      }
      for (double z : zero_) {
        if (!(z > 0)) Decline(Where() + " has a zero-cover branch on a path");
      }
      entries_ += 1ull << features_.size();
      if (entries_ * sizeof(float) > limits_.max_table_bytes) {
        char mib[32];
        std::snprintf(mib, sizeof mib, "%.0f", static_cast<double>(limits_.max_table_bytes) / (1 << 20));
        Decline(std::string("tables would exceed ") + mib + " MiB");
      }
      out_->nodes.push_back(ShapNode{-1, 0.0f, static_cast<uint8_t>(features_.size()), 0});
      pending_.push_back(PendingLeaf{(*tree_->split_condition)[node], features_, zero_});
      return;
    }
    size_t left = Child(*tree_->left, node);
    size_t right = Child(*tree_->right, node);
    double feature_value = (*tree_->split_index)[node];
    if (!(feature_value >= 0) || feature_value >= num_features_ || feature_value != std::floor(feature_value)) {
      Decline(Where() + " splits on feature " + std::to_string(feature_value));
    }
    auto feature = static_cast<int32_t>(feature_value);
    size_t slot = 0;
    while (slot < features_.size() && features_[slot] != feature) ++slot;
    bool added = slot == features_.size();
    if (added) {
      features_.push_back(feature);
      zero_.push_back(1);
    }
    if (slot > 30) Decline(Where() + " has more than 31 distinct features on a path");
    out_->nodes.push_back(ShapNode{feature, static_cast<float>((*tree_->split_condition)[node]),
                                   static_cast<uint8_t>(slot),
                                   static_cast<uint8_t>((*tree_->default_left)[node] != 0 ? 1 : 0)});
    const auto& cover = *tree_->cover;
    double w = cover[node];
    double before = zero_[slot];
    zero_[slot] = before * (cover[left] / w);
    Walk(left, depth + 1);
    zero_[slot] = before * (cover[right] / w);
    Walk(right, depth + 1);
    zero_[slot] = before;
    if (added) {
      features_.pop_back();
      zero_.pop_back();
    }
  }

  const ShapLimits& limits_;
  uint32_t num_features_;
  ShapTables* out_;
  const Tree* tree_ = nullptr;
  size_t t_ = 0;
  size_t visits_ = 0;
  std::vector<int32_t> features_;
  std::vector<double> zero_;
  std::vector<PendingLeaf> pending_;
  uint64_t entries_ = 0;
};

}  // namespace

std::shared_ptr<const ShapTables> BuildShapTables(const char* json, size_t size, const ShapLimits& limits) {
  if (limits.max_path_features < 1 || limits.max_path_features > 24) {
    throw std::invalid_argument("maxPathFeatures must be an integer in [1, 24]");
  }
  JsonValue model = JsonReader(json, size).ReadDocument();
  const JsonValue& learner = Member(model, "learner", "model");
  const JsonValue& booster = Member(learner, "gradient_booster", "learner");
  const JsonValue* booster_name = booster.Find("name");
  std::string name = booster_name != nullptr ? booster_name->text : "";
  if (name != "gbtree") Decline("booster \"" + name + "\" is not gbtree");
  const JsonValue* param = learner.Find("learner_model_param");
  auto param_of = [&](const char* key) { return param != nullptr ? param->Find(key) : nullptr; };
  if (NumberParam(param_of("num_class"), 0, "num_class") > 1 ||
      NumberParam(param_of("num_target"), 1, "num_target") > 1) {
    Decline("multi-output model");
  }
  double num_feature = NumberParam(param_of("num_feature"), 0, "num_feature");
  if (!(num_feature >= 1) || num_feature != std::floor(num_feature) || num_feature > 1e6) {
    Decline("num_feature missing");
  }
  const JsonValue* objective = learner.Find("objective");
  const JsonValue* objective_name = objective != nullptr ? objective->Find("name") : nullptr;
  if (param_of("base_score") == nullptr) Decline("base_score missing");
  double base = BaseMargin(objective_name != nullptr ? objective_name->text : "",
                           NumberParam(param_of("base_score"), 0, "base_score"));
  const JsonValue& gbtree = Member(booster, "model", "gradient_booster");
  const JsonValue* trees = gbtree.Find("trees");
  if (trees == nullptr || trees->kind != JsonValue::Kind::kArray) Decline("no trees");
  if (const JsonValue* info = gbtree.Find("tree_info"); info != nullptr) {
    for (double g : info->numbers) {
      if (g != 0) Decline("trees of several output groups");
    }
  }

  auto out = std::make_shared<ShapTables>();
  out->num_features = static_cast<uint32_t>(num_feature);
  out->bias = base;
  Builder builder(limits, out->num_features, out.get());
  // An empty numeric array is still "numeric"; only objects can be trees.
  const std::vector<JsonValue>& items = trees->items;
  if (trees->numeric && !trees->numbers.empty()) throw std::runtime_error("model JSON: trees are not objects");
  for (size_t t = 0; t < items.size(); ++t) {
    const JsonValue& tree = items[t];
    const JsonValue* tree_param = tree.Find("tree_param");
    auto tp = [&](const char* key) { return tree_param != nullptr ? tree_param->Find(key) : nullptr; };
    std::string where = "tree " + std::to_string(t);
    if (NumberParam(tp("size_leaf_vector"), 0, "size_leaf_vector") > 1) Decline(where + " has vector leaves");
    if (NumberParam(tp("num_deleted"), 0, "num_deleted") != 0) Decline(where + " has deleted nodes");
    if (const JsonValue* split_type = tree.Find("split_type"); split_type != nullptr) {
      for (double s : split_type->numbers) {
        if (s != 0) Decline(where + " has categorical splits");
      }
      if (!split_type->items.empty()) Decline(where + " has categorical splits");
    }
    const auto& left = NodeArray(tree, "left_children", t, 0);
    if (left.empty()) throw std::runtime_error("model JSON: " + where + " has no nodes");
    Tree view{&left,
              &NodeArray(tree, "right_children", t, left.size()),
              &NodeArray(tree, "split_indices", t, left.size()),
              &NodeArray(tree, "split_conditions", t, left.size()),
              &NodeArray(tree, "default_left", t, left.size()),
              &NodeArray(tree, "sum_hessian", t, left.size()),
              left.size()};
    builder.AddTree(view, t);
  }
  builder.Finish();
  return out;
}

void ShapTables::Contributions(const float* data, uint64_t rows, float* out) const {
  const uint64_t cols = num_features;
  const uint64_t width = cols + 1;
  std::vector<double> phi(width);
  // The satisfied bits of the right children still to visit: in preorder, the next node after a leaf
  // is the right child of the latest split whose right side has not been visited, so a stack holds
  // them (at most the depth, bounded at 64 by the build).
  uint32_t pending[72];
  for (uint64_t r = 0; r < rows; ++r) {
    const float* x = data + r * cols;
    std::fill(phi.begin(), phi.end(), 0.0);
    const ShapSlot* slot = slots.data();
    const float* table = tables.data();
    int depth = 0;
    // The bits of the path features the row satisfies so far; all of them at a tree's root.
    uint32_t sat = ~0u;
    for (const ShapNode& nd : nodes) {
      if (nd.feature >= 0) {
        float v = x[nd.feature];
        // NaN takes the default branch, as XGBoost's DMatrix treats a missing value. Bitwise, not a
        // branch: the direction is a coin toss for the predictor, and a miss costs more than both sides.
        bool left = (v < nd.threshold) | (std::isnan(v) & (nd.default_left != 0));
        uint32_t off = sat & ~(1u << nd.slot);
        pending[depth++] = left ? off : sat;
        sat = left ? sat : off;
        continue;
      }
      const uint32_t d = nd.slot;
      const uint32_t m = sat & ((1u << d) - 1);
      const double here = table[m];
      // The satisfied features, then the others, each by its set bits: whether a feature is satisfied
      // is a coin toss for the branch predictor, and two loops over bits miss about twice a leaf.
      for (uint32_t on = m; on != 0; on &= on - 1) {
        uint32_t j = __builtin_ctz(on);
        phi[slot[j].feature] += static_cast<double>(table[m ^ (1u << j)]) * slot[j].ratio;
      }
      for (uint32_t off = ~m & ((1u << d) - 1); off != 0; off &= off - 1) {
        phi[slot[__builtin_ctz(off)].feature] -= here;
      }
      slot += d;
      table += 1ull << d;
      sat = depth > 0 ? pending[--depth] : ~0u;
    }
    float* o = out + r * width;
    for (uint64_t f = 0; f < cols; ++f) o[f] = static_cast<float>(phi[f]);
    o[cols] = static_cast<float>(bias);
  }
}

}  // namespace xgbaddon
