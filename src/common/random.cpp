#include "common/random.hpp"

namespace moeflow::rng {
namespace {

constexpr int kBlocks = 128;
constexpr double kR = 3.442619855899;          // start of the tail
constexpr double kV = 9.91256303526217e-3;     // area of each block

}  // namespace

ZigguratNormal::ZigguratNormal() {
  double f = std::exp(-0.5 * kR * kR);
  x_[0] = kV / f;  // the bottom block (rectangle plus tail) has the same area
  x_[1] = kR;
  x_[kBlocks] = 0.0;
  for (int i = 2; i < kBlocks; ++i) {
    x_[i] = std::sqrt(-2.0 * std::log(kV / x_[i - 1] + f));
    f = std::exp(-0.5 * x_[i] * x_[i]);
  }
  for (int i = 0; i < kBlocks; ++i) ratio_[i] = x_[i + 1] / x_[i];
}

double ZigguratNormal::Slow(Xoshiro256& rng, int i, double u) const {
  if (i == 0) {  // the tail beyond R (Marsaglia 1964)
    double x, y;
    do {
      x = std::log(rng.Uniform()) / kR;
      y = std::log(rng.Uniform());
    } while (-2.0 * y < x * x);
    return u < 0 ? x - kR : kR - x;
  }
  const double x = u * x_[i];
  const double f0 = std::exp(-0.5 * (x_[i] * x_[i] - x * x));
  const double f1 = std::exp(-0.5 * (x_[i + 1] * x_[i + 1] - x * x));
  if (f1 + rng.Uniform() * (f0 - f1) < 1.0) return x;
  return std::numeric_limits<double>::quiet_NaN();
}

const ZigguratNormal& StandardNormal() {
  static const ZigguratNormal table;
  return table;
}

double ChiSquared(Xoshiro256& rng, double dof) {
  const double shape = 0.5 * dof;
  // Gamma(a) for a < 1 as Gamma(a + 1) · U^(1/a).
  const double a = shape < 1.0 ? shape + 1.0 : shape;
  const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  const ZigguratNormal& normal = StandardNormal();
  double gamma = 0.0;
  for (;;) {
    const double x = normal(rng);
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    const double u = rng.Uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x || std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) {
      gamma = d * v;
      break;
    }
  }
  if (shape < 1.0) gamma *= std::pow(rng.Uniform(), 1.0 / shape);
  return 2.0 * gamma;
}

}  // namespace moeflow::rng
