// moeflow/links/functions.hpp
// Non-polynomial links given by their value and derivative, with their kinks.
//
//   relu        max(0, z)                          kink at 0
//   leaky_relu  z (z > 0), α z (z ≤ 0)             kink at 0
//   abs         |z|                                kink at 0
//   sign        −1, 0, 1                           jump at 0 (derivative 0 elsewhere)
//   step        1 (z > 0), 0 (z ≤ 0)               jump at 0
//   erf         erf(z)
//   erf_sqrt2   erf(z/√2): Saad & Solla's g; its closed-form expectations are in theory.md §2
//   tanh, sigmoid 1/(1+e^(−z)), softplus log(1+e^z), gelu z·Φ(z) (exact, not the tanh
//   approximation), silu z·sigmoid(z)
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "moeflow/links/link.hpp"

namespace moeflow {

class FunctionLink final : public Link {
 public:
  // The derivatives f, ..., f^(n) at z (optional: empty when not known in closed form).
  using Tower = std::function<void(double z, int n, double* out)>;

  FunctionLink(std::string spec, std::function<double(double)> value,
               std::function<double(double)> derivative, std::vector<double> kinks = {}, Tower tower = {})
      : spec_(std::move(spec)), value_(std::move(value)), derivative_(std::move(derivative)),
        kinks_(std::move(kinks)), tower_(std::move(tower)) {}

  std::string Spec() const override { return spec_; }
  double Value(double z) const override { return value_(z); }
  double Derivative(double z) const override { return derivative_(z); }
  std::vector<double> Kinks() const override { return kinks_; }
  bool Derivatives(double z, int n, double* out) const override {
    if (!tower_) return false;
    tower_(z, n, out);
    return true;
  }

 private:
  std::string spec_;
  std::function<double(double)> value_, derivative_;
  std::vector<double> kinks_;
  Tower tower_;
};

}  // namespace moeflow
