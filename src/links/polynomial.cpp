#include "moeflow/links/polynomial.hpp"

#include <cmath>

namespace moeflow {

std::vector<double> NormalisedHermiteValues(int max_order, double z) {
  std::vector<double> h(static_cast<std::size_t>(max_order) + 1);
  h[0] = 1.0;
  if (max_order >= 1) h[1] = z;
  for (int k = 1; k < max_order; ++k) {
    h[k + 1] = (z * h[k] - std::sqrt(static_cast<double>(k)) * h[k - 1]) /
               std::sqrt(static_cast<double>(k + 1));
  }
  return h;
}

HermitePolynomialLink::HermitePolynomialLink(std::vector<double> coefficients, std::string spec)
    : c_(std::move(coefficients)), spec_(std::move(spec)) {
  while (c_.size() > 1 && c_.back() == 0.0) c_.pop_back();
  if (c_.empty()) c_.push_back(0.0);
  for (std::size_t k = 0; k <= c_.size(); ++k) {
    root_.push_back(std::sqrt(static_cast<double>(k)));
    inverse_root_.push_back(k == 0 ? 0.0 : 1.0 / root_.back());
  }
}

// Σ_k c_k h_k(z) by the forward recurrence h_{k+1} = (z h_k − √k h_{k−1})/√(k+1), no storage.
double HermitePolynomialLink::Value(double z) const {
  double previous = 0.0, current = 1.0, f = c_[0];
  for (std::size_t k = 0; k + 1 < c_.size(); ++k) {
    const double next = (z * current - root_[k] * previous) * inverse_root_[k + 1];
    previous = current;
    current = next;
    f += c_[k + 1] * current;
  }
  return f;
}

// h_k' = sqrt(k) h_{k-1}.
double HermitePolynomialLink::Derivative(double z) const {
  if (c_.size() < 2) return 0.0;
  double previous = 0.0, current = 1.0, df = c_[1];
  for (std::size_t k = 0; k + 2 < c_.size(); ++k) {
    const double next = (z * current - root_[k] * previous) * inverse_root_[k + 1];
    previous = current;
    current = next;
    df += c_[k + 2] * root_[k + 2] * current;
  }
  return df;
}

// Both sums over one recurrence: f = Σ_k c_k h_k, f' = Σ_k c_k √k h_{k−1}.
void HermitePolynomialLink::ValueAndDerivative(double z, double* value, double* derivative) const {
  double previous = 0.0, current = 1.0, f = c_[0], df = 0.0;  // current = h_k, from k = 0
  for (std::size_t k = 0; k + 1 < c_.size(); ++k) {
    df += c_[k + 1] * root_[k + 1] * current;  // c_{k+1} √(k+1) h_k
    const double next = (z * current - root_[k] * previous) * inverse_root_[k + 1];
    previous = current;
    current = next;
    f += c_[k + 1] * current;
  }
  *value = f;
  *derivative = df;
}

// f^(j) = Σ_k c_k √(k!/(k−j)!) h_{k−j}.
bool HermitePolynomialLink::Derivatives(double z, int n, double* out) const {
  const int degree = static_cast<int>(c_.size()) - 1;
  const std::vector<double> h = NormalisedHermiteValues(degree, z);
  std::vector<double> c = c_;
  for (int j = 0; j <= n; ++j) {
    double f = 0.0;
    for (int k = 0; k + j <= degree; ++k) f += c[k] * h[k];
    out[j] = f;
    for (int k = 0; k + j < degree; ++k) c[k] = c[k + 1] * std::sqrt(k + 1.0);  // differentiate
    if (degree - j >= 0) c[degree - j] = 0.0;
  }
  return true;
}

int HermitePolynomialLink::PolynomialDegree() const { return static_cast<int>(c_.size()) - 1; }

std::vector<double> HermitePolynomialLink::HermiteCoefficients(int max_order) const {
  std::vector<double> out(static_cast<std::size_t>(max_order) + 1, 0.0);
  for (std::size_t k = 0; k < c_.size() && k < out.size(); ++k) out[k] = c_[k];
  return out;
}

}  // namespace moeflow
