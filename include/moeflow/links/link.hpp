// moeflow/links/link.hpp
// Link functions (activations and target functions) f: R -> R, with their derivative and
// their expansion in the orthonormal Hermite basis h_k = He_k / sqrt(k!):
//   f(z) = sum_k c_k h_k(z),  c_k = E[f(z) h_k(z)],  z ~ N(0, 1),  E[f^2] = sum_k c_k^2.
// Links are made by name from a spec string, e.g. "relu", "h(3)", "hermite(0, 0, 0, 1)".
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moeflow {

class Link {
 public:
  virtual ~Link() = default;

  // The canonical spec: MakeLink(Spec()) makes an equal link.
  virtual std::string Spec() const = 0;
  virtual double Value(double z) const = 0;
  virtual double Derivative(double z) const = 0;
  // f(z) and f'(z) together (a polynomial shares one recurrence for both).
  virtual void ValueAndDerivative(double z, double* value, double* derivative) const {
    *value = Value(z);
    *derivative = Derivative(z);
  }

  // f, f', ..., f^(n) at z into out[0..n], when known in closed form (sigmoid, tanh,
  // polynomials); false otherwise. Used where expectations need higher derivatives of a gate.
  virtual bool Derivatives(double /*z*/, int /*n*/, double* /*out*/) const { return false; }
  // The degree if the link is a polynomial, -1 otherwise.
  virtual int PolynomialDegree() const { return -1; }

  // Points where f or f' is not smooth (relu: {0}); quadratures split there.
  virtual std::vector<double> Kinks() const { return {}; }

  // Normalised Hermite coefficients c_0..c_K of f (exact for polynomials; otherwise by the
  // quadrature of links/hermite.hpp, accurate to about 1e-13 absolute).
  virtual std::vector<double> HermiteCoefficients(int max_order) const;
};

using LinkPtr = std::shared_ptr<const Link>;

// Makes a link from its spec "name" or "name(arg, ...)". Throws InputError naming the spec
// and the rule it breaks (unknown name, wrong number of arguments, malformed number).
LinkPtr MakeLink(std::string_view spec);

// One line per known link: its spec pattern and what it is (for --help and error messages).
std::vector<std::string> KnownLinks();

}  // namespace moeflow
