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
}

double HermitePolynomialLink::Value(double z) const {
  const std::vector<double> h = NormalisedHermiteValues(static_cast<int>(c_.size()) - 1, z);
  double f = 0.0;
  for (std::size_t k = 0; k < c_.size(); ++k) f += c_[k] * h[k];
  return f;
}

// h_k' = sqrt(k) h_{k-1}.
double HermitePolynomialLink::Derivative(double z) const {
  if (c_.size() < 2) return 0.0;
  const std::vector<double> h = NormalisedHermiteValues(static_cast<int>(c_.size()) - 2, z);
  double df = 0.0;
  for (std::size_t k = 1; k < c_.size(); ++k) {
    df += c_[k] * std::sqrt(static_cast<double>(k)) * h[k - 1];
  }
  return df;
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
