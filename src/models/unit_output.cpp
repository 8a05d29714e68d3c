#include "models/unit_output.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moeflow {

BlockOutput::BlockOutput(const UnitBlock& block, int expert, int router)
    : block_(block), expert_(expert), router_(router) {}

double BlockOutput::Evaluate(const double* h, const double* a, double* grad, Scratch* scratch, double* phi) const {
  const int m = block_.units;
  const Link& sigma = *block_.link;
  double f = 0.0;
  if (phi != nullptr) std::fill(phi, phi + m, 0.0);
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
      const Link& own = *block_.LinkOf(i);  // per-unit links: ungated blocks only
      const double s = own.Value(z);
      if (block_.gate) {
        const double r = h[router_ + i], gate = block_.gate->Value(r);
        f += a[i] * gate * s;
        if (phi != nullptr) phi[i] = gate * s;
        if (grad != nullptr) {
          grad[expert_ + i] = a[i] * gate * sigma.Derivative(z);
          grad[router_ + i] = a[i] * block_.gate->Derivative(r) * s;
        }
      } else {
        f += a[i] * s;
        if (phi != nullptr) phi[i] = s;
        if (grad != nullptr) grad[expert_ + i] = a[i] * own.Derivative(z);
      }
    }
    return f;
  }
  const int k = std::min(block_.top_k, m);
  const double tau = block_.temperature;
  const double* logit = h + router_;
  std::vector<int>& order = scratch->order;
  std::vector<double>& c = scratch->weight;
  order.resize(static_cast<std::size_t>(m));
  c.resize(static_cast<std::size_t>(m));
  std::iota(order.begin(), order.end(), 0);
  const bool soft = block_.selection_temperature > 0 && k < m;
  const int ranked = soft ? k + 1 : k;  // the soft threshold needs the (k+1)-th largest too
  std::partial_sort(order.begin(), order.begin() + ranked, order.end(), [logit](int x, int y) {
    return logit[x] > logit[y] || (logit[x] == logit[y] && x < y);
  });
  if (soft) return EvaluateSoft(h, a, grad, k, scratch, phi);
  if (block_.softmax) {
    // Relative to the top logit, whose weight is exp(0) = 1: k − 1 exponentials, one division.
    const double top = logit[order[0]], inverse_tau = 1.0 / tau;
    double total = c[0] = 1.0;
    for (int j = 1; j < k; ++j) total += c[j] = std::exp((logit[order[j]] - top) * inverse_tau);
    const double inverse_total = 1.0 / total;
    for (int j = 0; j < k; ++j) c[j] *= inverse_total;
  } else {
    std::fill(c.begin(), c.begin() + k, 1.0);
  }
  std::vector<double>& out = scratch->output;  // the selected experts' outputs
  out.resize(static_cast<std::size_t>(k));
  if (grad != nullptr) {
    std::fill(grad + expert_, grad + expert_ + m * block_.neurons, 0.0);
    std::fill(grad + router_, grad + router_ + m, 0.0);
  }
  for (int j = 0; j < k; ++j) {
    const int i = order[j];
    double unit = 0.0;  // a pruned expert (a_i = 0) still takes its share, with output and gradient 0
    if (a[i] != 0.0 && grad != nullptr) {
      const double scale = c[j] * a[i];  // ∂f/∂h of the expert's neurons: c_j a_i σ'(h)
      for (int n = 0; n < block_.neurons; ++n) {
        const int v = expert_ + i * block_.neurons + n;
        double value = 0.0, derivative = 0.0;
        sigma.ValueAndDerivative(h[v], &value, &derivative);
        unit += value;
        grad[v] = scale * derivative;
      }
    } else if (a[i] != 0.0) {
      unit = ExpertOutput(h, i);
    }
    out[j] = a[i] * unit;
    f += c[j] * out[j];
    if (phi != nullptr) phi[i] = c[j] * unit;
  }
  if (grad != nullptr && block_.softmax) {
    for (int j = 0; j < k; ++j) grad[router_ + order[j]] = c[j] * (out[j] - f) / tau;
  }
  return f;
}

double BlockOutput::ExpertOutput(const double* h, int i) const {
  const Link& sigma = *block_.link;
  const int neurons = block_.neurons;
  double s = 0.0;
  for (int j = 0; j < neurons; ++j) s += sigma.Value(h[expert_ + i * neurons + j]);
  return s;
}

void BlockOutput::ExpertGradient(const double* h, int i, double scale, double* grad) const {
  const Link& sigma = *block_.link;
  const int neurons = block_.neurons;
  for (int j = 0; j < neurons; ++j) {
    const int v = expert_ + i * neurons + j;
    grad[v] = scale != 0.0 ? scale * sigma.Derivative(h[v]) : 0.0;
  }
}

// Soft top-k, with l = r/τ, t = (l_(k) + l_(k+1))/2 and μ_i = logistic((l_i − t)/τ_s):
//   softmax  c_i = μ_i e^{l_i} / Σ_j μ_j e^{l_j},   equal  c_i = μ_i,   f = Σ_i c_i o_i, o_i = a_i σ(h_i).
// With ∂μ_i/∂l_j = μ_i(1 − μ_i)(δ_ij − ∂t/∂l_j)/τ_s and ∂t/∂l_j = 1/2 for the k-th and (k+1)-th:
//   softmax  ∂f/∂l_j = c_j(o_j − f) + [c_j(1 − μ_j)(o_j − f) − ∂t/∂l_j Σ_i c_i(1 − μ_i)(o_i − f)]/τ_s
//   equal    ∂f/∂l_j = [μ_j(1 − μ_j) o_j − ∂t/∂l_j Σ_i μ_i(1 − μ_i) o_i]/τ_s
// and ∂f/∂r_j = ∂f/∂l_j / τ. Every unit takes part (μ_i > 0), so every expert gets a gradient.
double BlockOutput::EvaluateSoft(const double* h, const double* a, double* grad, int k, Scratch* scratch,
                                 double* phi) const {
  const int m = block_.units;
  const double tau = block_.temperature, tau_s = block_.selection_temperature;
  const double* logit = h + router_;
  const int kth = scratch->order[static_cast<std::size_t>(k - 1)], next = scratch->order[static_cast<std::size_t>(k)];
  const double threshold = 0.5 * (logit[kth] + logit[next]) / tau;
  const double top = logit[scratch->order[0]] / tau;
  std::vector<double>& c = scratch->weight;  // indexed by unit here
  std::vector<double>& mask = scratch->mask;
  mask.resize(static_cast<std::size_t>(m));
  double total = 0.0;
  for (int i = 0; i < m; ++i) {
    const double u = (logit[i] / tau - threshold) / tau_s;
    const double mu = u >= 0 ? 1.0 / (1.0 + std::exp(-u)) : std::exp(u) / (1.0 + std::exp(u));
    mask[static_cast<std::size_t>(i)] = mu;
    c[static_cast<std::size_t>(i)] = block_.softmax ? mu * std::exp(logit[i] / tau - top) : mu;
    total += c[static_cast<std::size_t>(i)];
  }
  if (block_.softmax) {
    for (int i = 0; i < m; ++i) c[static_cast<std::size_t>(i)] /= total;
  }
  double f = 0.0;
  std::vector<double>& out = scratch->output;
  out.resize(static_cast<std::size_t>(m));
  for (int i = 0; i < m; ++i) {
    const double unit = a[i] != 0.0 ? ExpertOutput(h, i) : 0.0;
    out[i] = a[i] * unit;
    f += c[static_cast<std::size_t>(i)] * out[i];
    if (phi != nullptr) phi[i] = c[static_cast<std::size_t>(i)] * unit;
  }
  if (grad == nullptr) return f;
  double common = 0.0;
  for (int i = 0; i < m; ++i) {
    const double o = out[i];
    const double ci = c[static_cast<std::size_t>(i)], mu = mask[static_cast<std::size_t>(i)];
    ExpertGradient(h, i, ci * a[i], grad);
    if (block_.softmax) {
      grad[router_ + i] = (ci * (o - f) + ci * (1.0 - mu) * (o - f) / tau_s) / tau;
      common += ci * (1.0 - mu) * (o - f);
    } else {
      grad[router_ + i] = mu * (1.0 - mu) * o / tau_s / tau;
      common += mu * (1.0 - mu) * o;
    }
  }
  grad[router_ + kth] -= 0.5 * common / tau_s / tau;
  grad[router_ + next] -= 0.5 * common / tau_s / tau;
  return f;
}

}  // namespace moeflow
