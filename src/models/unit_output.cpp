#include "models/unit_output.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moeflow {

BlockOutput::BlockOutput(const UnitBlock& block, int expert, int router)
    : block_(block), expert_(expert), router_(router) {}

double BlockOutput::Evaluate(const double* h, const double* a, double* grad, Scratch* scratch) const {
  const int m = block_.units;
  const Link& sigma = *block_.link;
  double f = 0.0;
  if (block_.top_k == 0) {
    for (int i = 0; i < m; ++i) {
      const double z = h[expert_ + i];
      if (a[i] == 0.0) {
        if (grad != nullptr) {
          grad[expert_ + i] = 0.0;
          if (router_ >= 0) grad[router_ + i] = 0.0;
        }
        continue;
      }
      const double s = sigma.Value(z);
      if (block_.gate) {
        const double r = h[router_ + i], gate = block_.gate->Value(r);
        f += a[i] * gate * s;
        if (grad != nullptr) {
          grad[expert_ + i] = a[i] * gate * sigma.Derivative(z);
          grad[router_ + i] = a[i] * block_.gate->Derivative(r) * s;
        }
      } else {
        f += a[i] * s;
        if (grad != nullptr) grad[expert_ + i] = a[i] * sigma.Derivative(z);
      }
    }
    return f;
  }
  const int k = std::min(block_.top_k, m);
  std::vector<int>& order = scratch->order;
  std::vector<double>& c = scratch->weight;
  order.resize(static_cast<std::size_t>(m));
  c.resize(static_cast<std::size_t>(m));
  std::iota(order.begin(), order.end(), 0);
  const double* logit = h + router_;
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [logit](int x, int y) {
    return logit[x] > logit[y] || (logit[x] == logit[y] && x < y);
  });
  const double tau = block_.temperature;
  if (block_.softmax) {
    const double top = logit[order[0]];
    double total = 0.0;
    for (int j = 0; j < k; ++j) total += c[j] = std::exp((logit[order[j]] - top) / tau);
    for (int j = 0; j < k; ++j) c[j] /= total;
  } else {
    std::fill(c.begin(), c.begin() + k, 1.0);
  }
  for (int j = 0; j < k; ++j) {
    const int i = order[j];
    if (a[i] != 0.0) f += c[j] * a[i] * sigma.Value(h[expert_ + i]);
  }
  if (grad != nullptr) {
    std::fill(grad + expert_, grad + expert_ + m, 0.0);
    std::fill(grad + router_, grad + router_ + m, 0.0);
    for (int j = 0; j < k; ++j) {
      const int i = order[j];
      const double z = h[expert_ + i];
      const double out = a[i] != 0.0 ? a[i] * sigma.Value(z) : 0.0;  // a pruned expert still takes its share
      if (a[i] != 0.0) grad[expert_ + i] = c[j] * a[i] * sigma.Derivative(z);
      if (block_.softmax) grad[router_ + i] = c[j] * (out - f) / tau;
    }
  }
  return f;
}

}  // namespace moeflow
