// moeflow/links/polynomial.hpp
// A polynomial link given by its normalised Hermite coefficients: f = sum_k c_k h_k.
// identity, he(k), h(k) and hermite(c0, c1, ...) are all of this kind.
#pragma once

#include <string>
#include <vector>

#include "moeflow/links/link.hpp"

namespace moeflow {

class HermitePolynomialLink final : public Link {
 public:
  // coefficients[k] = c_k; spec is the canonical string the link reports.
  HermitePolynomialLink(std::vector<double> coefficients, std::string spec);

  std::string Spec() const override { return spec_; }
  double Value(double z) const override;
  double Derivative(double z) const override;
  void ValueAndDerivative(double z, double* value, double* derivative) const override;
  bool Derivatives(double z, int n, double* out) const override;
  int PolynomialDegree() const override;
  std::vector<double> HermiteCoefficients(int max_order) const override;

 private:
  std::vector<double> c_;
  std::vector<double> root_, inverse_root_;  // √k and 1/√k (0 at k = 0)
  std::string spec_;
};

// h_0(z), ..., h_K(z) by the three-term recurrence h_{k+1} = (z h_k - sqrt(k) h_{k-1})/sqrt(k+1).
std::vector<double> NormalisedHermiteValues(int max_order, double z);

}  // namespace moeflow
