// Link registry: parses "name" / "name(arg, ...)" and dispatches to a factory by name.
#include "moeflow/links/link.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>

#include "common/text.hpp"
#include "moeflow/error.hpp"
#include "moeflow/links/functions.hpp"
#include "moeflow/links/hermite.hpp"
#include "moeflow/links/polynomial.hpp"

namespace moeflow {
namespace {

using detail::DidYouMean;
using detail::Trim;
std::string FormatNumber(double v) { return detail::FormatNumber(v, 17); }

constexpr int kMaxHermiteIndex = 60;  // h(k), he(k): k <= 60 (the engine's maximum order)

[[noreturn]] void ThrowBadLink(std::string_view spec, const std::string& rule) {
  throw InputError("link '" + std::string(spec) + "': " + rule);
}

struct ParsedSpec {
  std::string name;
  std::vector<double> args;
};

ParsedSpec Parse(std::string_view spec) {
  ParsedSpec p;
  const std::string s = Trim(spec);
  const std::size_t open = s.find('(');
  p.name = Trim(s.substr(0, open));
  if (p.name.empty()) ThrowBadLink(spec, "empty link name");
  if (open == std::string::npos) return p;
  if (s.back() != ')') ThrowBadLink(spec, "expected ')' at the end of the argument list");
  const std::string inner = s.substr(open + 1, s.size() - open - 2);
  if (Trim(inner).empty()) return p;
  std::stringstream list(inner);
  std::string item;
  while (std::getline(list, item, ',')) {
    const std::string t = Trim(item);
    char* end = nullptr;
    const double v = std::strtod(t.c_str(), &end);
    if (t.empty() || end != t.c_str() + t.size() || !std::isfinite(v)) {
      ThrowBadLink(spec, "argument '" + t + "' is not a finite number");
    }
    p.args.push_back(v);
  }
  return p;
}

int HermiteIndex(std::string_view spec, const ParsedSpec& p) {
  if (p.args.size() != 1) ThrowBadLink(spec, "takes exactly one argument k, e.g. " + p.name + "(3)");
  const double k = p.args[0];
  if (k != std::floor(k) || k < 0 || k > kMaxHermiteIndex) {
    ThrowBadLink(spec, "k must be an integer in [0, " + std::to_string(kMaxHermiteIndex) + "]");
  }
  return static_cast<int>(k);
}

void ExpectNoArguments(std::string_view spec, const ParsedSpec& p) {
  if (!p.args.empty()) ThrowBadLink(spec, "takes no arguments");
}

using Factory = std::function<LinkPtr(std::string_view, const ParsedSpec&)>;

struct Entry {
  std::string pattern;
  std::string description;
  Factory make;
};

double Sigmoid(double z) { return z >= 0 ? 1 / (1 + std::exp(-z)) : std::exp(z) / (1 + std::exp(z)); }
double NormalCdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }
double NormalPdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2 * M_PI); }

// Derivatives of a link g with g' = a0 + a1 g + a2 g² (sigmoid: g − g², tanh: 1 − g²):
// every g^(j) is a polynomial P_j(g), P_0 = g, P_{j+1} = P_j'(g) (a0 + a1 g + a2 g²).
FunctionLink::Tower RiccatiTower(double (*value)(double), double a0, double a1, double a2) {
  constexpr int kMaxOrder = 24;
  auto table = std::make_shared<std::vector<std::vector<double>>>();  // monomial coefficients of P_j
  table->push_back({0.0, 1.0});
  for (int j = 0; j < kMaxOrder; ++j) {
    const std::vector<double>& p = table->back();
    std::vector<double> next(p.size() + 1, 0.0);
    for (std::size_t i = 1; i < p.size(); ++i) {  // i p_i g^(i−1) · (a0 + a1 g + a2 g²)
      const double c = static_cast<double>(i) * p[i];
      next[i - 1] += c * a0;
      next[i] += c * a1;
      next[i + 1] += c * a2;
    }
    table->push_back(std::move(next));
  }
  return [value, table](double z, int n, double* out) {
    if (n > kMaxOrder) {
      throw InputError("derivatives of order above " + std::to_string(kMaxOrder) + " are not tabulated");
    }
    const double g = value(z);
    for (int j = 0; j <= n; ++j) {
      const std::vector<double>& p = (*table)[j];
      double v = 0.0;
      for (std::size_t i = p.size(); i-- > 0;) v = v * g + p[i];  // Horner
      out[j] = v;
    }
  };
}

// An entry for a link without parameters given by its value and derivative.
Entry Function(const std::string& name, const std::string& description, double (*value)(double),
               double (*derivative)(double), std::vector<double> kinks = {}, FunctionLink::Tower tower = {}) {
  return {name, description, [=](std::string_view spec, const ParsedSpec& p) -> LinkPtr {
            ExpectNoArguments(spec, p);
            return std::make_shared<FunctionLink>(name, value, derivative, kinks, tower);
          }};
}

double Tanh(double z) { return std::tanh(z); }

const std::map<std::string, Entry>& Registry() {
  static const std::map<std::string, Entry> registry = {
      {"relu", Function("relu", "max(0, z)", [](double z) { return z > 0 ? z : 0.0; },
                        [](double z) { return z > 0 ? 1.0 : 0.0; }, {0.0})},
      {"abs", Function("abs", "|z|", [](double z) { return std::abs(z); },
                       [](double z) { return z > 0 ? 1.0 : (z < 0 ? -1.0 : 0.0); }, {0.0})},
      {"sign", Function("sign", "-1, 0, 1 (derivative 0 away from 0)",
                        [](double z) { return z > 0 ? 1.0 : (z < 0 ? -1.0 : 0.0); },
                        [](double) { return 0.0; }, {0.0})},
      {"step", Function("step", "1 for z > 0, else 0", [](double z) { return z > 0 ? 1.0 : 0.0; },
                        [](double) { return 0.0; }, {0.0})},
      {"erf", Function("erf", "erf(z)", [](double z) { return std::erf(z); },
                       [](double z) { return 2 / std::sqrt(M_PI) * std::exp(-z * z); })},
      {"erf_sqrt2", Function("erf_sqrt2", "erf(z/sqrt(2)), Saad & Solla's g",
                             [](double z) { return std::erf(z / std::sqrt(2.0)); },
                             [](double z) { return std::sqrt(2 / M_PI) * std::exp(-0.5 * z * z); })},
      {"tanh", Function("tanh", "tanh(z)", [](double z) { return std::tanh(z); },
                        [](double z) { return 1 - std::tanh(z) * std::tanh(z); }, {},
                        RiccatiTower(Tanh, 1.0, 0.0, -1.0))},
      {"sigmoid", Function("sigmoid", "1/(1 + exp(-z))", Sigmoid,
                           [](double z) { return Sigmoid(z) * (1 - Sigmoid(z)); }, {},
                           RiccatiTower(Sigmoid, 0.0, 1.0, -1.0))},
      {"softplus", Function("softplus", "log(1 + exp(z))",
                            [](double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); },
                            Sigmoid)},
      {"gelu", Function("gelu", "z Phi(z) (exact, with the normal CDF)", [](double z) { return z * NormalCdf(z); },
                        [](double z) { return NormalCdf(z) + z * NormalPdf(z); })},
      {"silu", Function("silu", "z sigmoid(z)", [](double z) { return z * Sigmoid(z); },
                        [](double z) { return Sigmoid(z) * (1 + z * (1 - Sigmoid(z))); })},
      {"leaky_relu",
       {"leaky_relu(alpha)", "z for z > 0, alpha z otherwise",
        [](std::string_view spec, const ParsedSpec& p) -> LinkPtr {
          if (p.args.size() != 1) ThrowBadLink(spec, "takes exactly one argument alpha, e.g. leaky_relu(0.1)");
          const double alpha = p.args[0];
          return std::make_shared<FunctionLink>(
              "leaky_relu(" + FormatNumber(alpha) + ")", [alpha](double z) { return z > 0 ? z : alpha * z; },
              [alpha](double z) { return z > 0 ? 1.0 : alpha; }, std::vector<double>{0.0});
        }}},
      {"square",
       {"square", "z^2 = sqrt(2) h_2 + h_0",
        [](std::string_view spec, const ParsedSpec& p) -> LinkPtr {
          ExpectNoArguments(spec, p);
          return std::make_shared<HermitePolynomialLink>(MonomialToHermite({0, 0, 1}), "square");
        }}},
      {"poly",
       {"poly(a0, a1, ...)", "polynomial sum_n a_n z^n in the monomial basis",
        [](std::string_view spec, const ParsedSpec& p) -> LinkPtr {
          if (p.args.empty()) ThrowBadLink(spec, "needs at least one coefficient a0");
          if (p.args.size() > kMaxHermiteIndex + 1) {
            ThrowBadLink(spec, "at most " + std::to_string(kMaxHermiteIndex + 1) + " coefficients");
          }
          std::string canonical = "poly(";
          for (std::size_t i = 0; i < p.args.size(); ++i) canonical += (i ? ", " : "") + FormatNumber(p.args[i]);
          return std::make_shared<HermitePolynomialLink>(MonomialToHermite(p.args), canonical + ")");
        }}},
      {"identity",
       {"identity", "f(z) = z",
        [](std::string_view spec, const ParsedSpec& p) -> LinkPtr {
          ExpectNoArguments(spec, p);
          return std::make_shared<HermitePolynomialLink>(std::vector<double>{0.0, 1.0},
                                                         "identity");
        }}},
      {"h",
       {"h(k)", "normalised Hermite polynomial h_k = He_k/sqrt(k!), k <= 60",
        [](std::string_view spec, const ParsedSpec& p) -> LinkPtr {
          const int k = HermiteIndex(spec, p);
          std::vector<double> c(static_cast<std::size_t>(k) + 1, 0.0);
          c[k] = 1.0;
          return std::make_shared<HermitePolynomialLink>(c, "h(" + std::to_string(k) + ")");
        }}},
      {"he",
       {"he(k)", "probabilists' Hermite polynomial He_k = sqrt(k!) h_k, k <= 60",
        [](std::string_view spec, const ParsedSpec& p) -> LinkPtr {
          const int k = HermiteIndex(spec, p);
          std::vector<double> c(static_cast<std::size_t>(k) + 1, 0.0);
          c[k] = std::exp(0.5 * std::lgamma(k + 1.0));
          return std::make_shared<HermitePolynomialLink>(c, "he(" + std::to_string(k) + ")");
        }}},
      {"hermite",
       {"hermite(c0, c1, ...)", "polynomial sum_k c_k h_k from normalised Hermite coefficients",
        [](std::string_view spec, const ParsedSpec& p) -> LinkPtr {
          if (p.args.empty()) ThrowBadLink(spec, "needs at least one coefficient c0");
          if (p.args.size() > kMaxHermiteIndex + 1) {
            ThrowBadLink(spec, "at most " + std::to_string(kMaxHermiteIndex + 1) + " coefficients");
          }
          std::string canonical = "hermite(";
          for (std::size_t i = 0; i < p.args.size(); ++i) {
            canonical += (i ? ", " : "") + FormatNumber(p.args[i]);
          }
          return std::make_shared<HermitePolynomialLink>(p.args, canonical + ")");
        }}},
  };
  return registry;
}

}  // namespace

LinkPtr MakeLink(std::string_view spec) {
  const ParsedSpec p = Parse(spec);
  const auto& registry = Registry();
  const auto it = registry.find(p.name);
  if (it == registry.end()) {
    std::string known;
    std::vector<std::string> names;
    for (const auto& [name, entry] : registry) {
      known += (known.empty() ? "" : ", ") + entry.pattern;
      names.push_back(name);
    }
    // "he3" for "he(3)": a parameterised link with its argument run on to its name.
    std::string hint = DidYouMean(p.name, names);
    const std::size_t cut = p.name.find_last_not_of("0123456789.") + 1;
    if (p.args.empty() && cut > 0 && cut < p.name.size()) {
      const auto stem = registry.find(p.name.substr(0, cut));
      if (stem != registry.end() && stem->second.pattern.find('(') != std::string::npos) {
        hint = "; did you mean '" + p.name.substr(0, cut) + "(" + p.name.substr(cut) + ")'?";
      }
    }
    ThrowBadLink(spec, "unknown link name '" + p.name + "'" + hint + " (known: " + known + ")");
  }
  return it->second.make(spec, p);
}

std::vector<std::string> KnownLinks() {
  std::vector<std::string> lines;
  for (const auto& [name, entry] : Registry()) lines.push_back(entry.pattern + ": " + entry.description);
  return lines;
}

}  // namespace moeflow
