// Exact path-dependent TreeSHAP for a few rows, from precomputed per-leaf tables (Fast TreeSHAP v2,
// Yang 2021, arXiv 2109.09847), over the trees of an XGBoost JSON model (gbtree, one target, numeric
// splits). It computes the values XGBoost's own predictContribs computes (Lundberg's TreeSHAP with node
// covers = sum_hessian), in the same layout: rows x (features + 1), bias last.
//
// Why tables: XGBoost re-derives every leaf's Shapley weights for every row (O(L.D^2) a tree), which
// costs 10-20 ms a row for 600 trees of depth 6. The weights depend on the row only through which of
// the leaf's path features the row "satisfies" (follows the path's branch at every split on it), so
// they are computed once per leaf and pattern, and a row costs O(L.D) lookups a tree.
//
// The algebra, per leaf with value v and d distinct path features, feature j with zero fraction z_j
// (product of cover(child on path) / cover(node) over the path's splits on j) and one fraction
// o_j in {0, 1} (the row follows the path at all of them):
//   phi_i += v (o_i - z_i) sum_{S subset of P\{i}} w(|S|, d) prod_{j in S} o_j prod_{j in P\{i}\S} z_j,
//   w(s, d) = s!(d-s-1)!/d!
// Only S within M (the satisfied set) survive. With H(A) = sum_{S subset of A} w(|S|, d) prod_{j in P\S} z_j
// (one number per subset A of the path's features, stored as v.H):
//   o_i = 1: phi_i += v.H(M\{i}) . (1 - z_i) / z_i        o_i = 0: phi_i -= v.H(M)
// (XGBoost's extra root element with z = o = 1 gives the same weights: w(s+1, d+1) + w(s, d+1) = w(s, d).)
//
// Memory: sum over leaves of 2^d float32s. Tables are built only when every leaf has at most
// max_path_features distinct features and the total stays within max_table_bytes; otherwise the
// builder throws ShapDeclined and the caller keeps XGBoost.
//
// Pure C++ (no N-API): the build runs on a libuv pool thread, and a built ShapTables is immutable, so
// any number of threads may evaluate it at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace xgbaddon {

// A model outside what the tables reproduce exactly, or tables beyond the limits; the message says why.
class ShapDeclined : public std::runtime_error {
 public:
  explicit ShapDeclined(const std::string& message) : std::runtime_error(message) {}
};

struct ShapLimits {
  int max_path_features = 12;
  uint64_t max_table_bytes = 16ull << 20;
};

// Every node of every tree in preorder: a split's left child follows it, its right child follows the
// left subtree, and the next tree follows the last leaf of the one before. Leaves are numbered, and
// their slots and tables laid out, in the same order, so a pass over the nodes finds a leaf's slots
// and table where the previous leaf's end (no indices to store or read).
struct ShapNode {
  int32_t feature;    // a split: the feature it tests; a leaf: -1
  float threshold;    // compared as float32, like XGBoost's `fvalue < split_cond`
  uint8_t slot;       // a split: the bit of its feature among the distinct features of the path so far;
                      // a leaf: d, the number of distinct features on its path
  uint8_t default_left;
};

// One of a leaf's distinct path features.
struct ShapSlot {
  int32_t feature;
  double ratio;  // (1 - z) / z
};

struct ShapTables {
  uint32_t num_features = 0;
  // base margin + sum of the trees' cover-weighted mean leaf values: XGBoost's bias column.
  double bias = 0;
  std::vector<ShapNode> nodes;
  uint64_t leaves = 0;
  std::vector<ShapSlot> slots;
  // v.H(A) for every leaf and subset A of its path features.
  std::vector<float> tables;

  uint64_t TableBytes() const { return tables.size() * sizeof(float); }

  // rows x cols row-major (NaN = missing: the split's default direction) into rows x (cols + 1), bias
  // last. cols must equal num_features.
  void Contributions(const float* data, uint64_t rows, float* out) const;
};

// From the bytes of an XGBoost JSON model (saveJson / the registry's model.json). Throws ShapDeclined
// for a model it does not reproduce exactly (gblinear, dart, multi-output or vector leaves, categorical
// splits, a zero-cover branch, an objective without an explanation space) or tables beyond `limits`,
// and std::runtime_error for text that is not such a model.
std::shared_ptr<const ShapTables> BuildShapTables(const char* json, size_t size, const ShapLimits& limits);

}  // namespace xgbaddon
