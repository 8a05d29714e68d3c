#include "moeflow/integrate/events.hpp"

#include <algorithm>
#include <cmath>
#include <regex>

#include "common/text.hpp"
#include "moeflow/error.hpp"

namespace moeflow {

int ObservableValueCount(const std::vector<ObservableInfo>& observables) {
  int n = 0;
  for (const ObservableInfo& o : observables) n += o.size();
  return n;
}

std::vector<int> ObservableOffsets(const std::vector<ObservableInfo>& observables) {
  std::vector<int> offsets;
  int n = 0;
  for (const ObservableInfo& o : observables) {
    offsets.push_back(n);
    n += o.size();
  }
  return offsets;
}

const char* ToString(Comparison comparison) {
  switch (comparison) {
    case Comparison::kGreaterEqual: return ">=";
    case Comparison::kGreater: return ">";
    case Comparison::kLessEqual: return "<=";
    case Comparison::kLess: return "<";
  }
  return "?";
}

bool FromString(const std::string& text, Comparison* comparison) {
  for (Comparison c : {Comparison::kGreaterEqual, Comparison::kGreater, Comparison::kLessEqual,
                       Comparison::kLess}) {
    if (text == ToString(c)) {
      *comparison = c;
      return true;
    }
  }
  return false;
}

bool EventConditionHolds(const EventSpec& spec, double value) {
  switch (spec.comparison) {
    case Comparison::kGreaterEqual: return value >= spec.threshold;
    case Comparison::kGreater: return value > spec.threshold;
    case Comparison::kLessEqual: return value <= spec.threshold;
    case Comparison::kLess: return value < spec.threshold;
  }
  return false;
}

void FixRelativeThreshold(EventSpec* spec, double initial_value) {
  if (!spec->IsRelative() || !std::isnan(spec->reference)) return;
  spec->reference = initial_value;
  spec->threshold = spec->relative * initial_value;
}

std::vector<bool> ObservablesPendingEventsRead(const std::vector<ObservableSelector>& selectors,
                                               const std::vector<EventRecord>& records, int observable_count) {
  std::vector<bool> wanted(static_cast<std::size_t>(observable_count), false);
  for (std::size_t e = 0; e < selectors.size(); ++e) {
    if (!records[e].occurred) wanted[static_cast<std::size_t>(selectors[e].observable())] = true;
  }
  return wanted;
}

ObservableSelector::ObservableSelector(const std::string& expression,
                                       const std::vector<ObservableInfo>& observables,
                                       const std::string& key) {
  static const std::regex kElement(R"(\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*(\d+)\s*(?:,\s*(\d+)\s*)?\])?\s*)");
  static const std::regex kReduced(
      R"(\s*(max|min|maxabs)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*(\d+)\s*:\s*(\d+)\s*\])?\s*\)\s*)");
  std::string known;
  for (const ObservableInfo& o : observables) {
    if (!known.empty()) known.append(", ");
    known.append(o.name);
    if (o.size() > 1) known.append(std::string(1, '[').append(std::to_string(o.rows)).append("x").append(std::to_string(o.cols)).append("]"));
  }
  const std::string rule_tail = " (observables of this model: " + known + ")";
  auto find = [&](const std::string& name) -> int {
    for (std::size_t i = 0; i < observables.size(); ++i) {
      if (observables[i].name == name) return static_cast<int>(i);
    }
    std::vector<std::string> names;
    for (const ObservableInfo& o : observables) names.push_back(o.name);
    ThrowBadValue(key, expression, "names no observable '" + name + "'" + detail::DidYouMean(name, names) + rule_tail);
  };
  const std::vector<int> offsets = ObservableOffsets(observables);
  std::smatch match;
  if (std::regex_match(expression, match, kReduced)) {
    const int i = find(match[2]);
    observable_ = i;
    const std::string op = match[1];
    reduction_ = op == "max" ? Reduction::kMax : op == "min" ? Reduction::kMin : Reduction::kMaxAbs;
    offset_ = offsets[i];
    count_ = observables[i].size();
    if (match[3].matched) {  // name[i:j]: the elements i, ..., j − 1 of a vector
      const ObservableInfo& o = observables[i];
      const int first = std::stoi(match[3]), end = std::stoi(match[4]);
      if (o.rows > 1 && o.cols > 1) {
        ThrowBadValue(key, expression, "takes a range of the matrix '" + o.name + "': ranges [i:j] are for vectors");
      }
      if (!(first < end && end <= o.size())) {
        ThrowBadValue(key, expression, "has an empty or out-of-range range: '" + o.name + "' has " +
                                           std::to_string(o.size()) + " elements, [i:j] takes i, ..., j - 1");
      }
      offset_ += first;
      count_ = end - first;
    }
    return;
  }
  if (!std::regex_match(expression, match, kElement)) {
    ThrowBadValue(key, expression,
                  "is not an observable expression: use name, name[i], name[i,j], max(name), "
                  "min(name), maxabs(name) or a reduction over a vector's elements i..j-1, max(name[i:j])" +
                      rule_tail);
  }
  const int i = find(match[1]);
  observable_ = i;
  const ObservableInfo& o = observables[i];
  int row = 0, col = 0;
  if (match[3].matched) {
    row = std::stoi(match[2]);
    col = std::stoi(match[3]);
  } else if (match[2].matched) {
    // name[i] indexes a vector, whichever way it is stored.
    const int index = std::stoi(match[2]);
    if (o.rows == 1) col = index; else row = index;
    if (o.rows > 1 && o.cols > 1) {
      ThrowBadValue(key, expression, "indexes the matrix '" + o.name + "' with one index: use [i,j]");
    }
  } else if (o.size() != 1) {
    ThrowBadValue(key, expression, "names the " + std::to_string(o.rows) + "x" +
                                       std::to_string(o.cols) + " observable '" + o.name +
                                       "': pick an element [i,j] or a reduction max/min/maxabs");
  }
  if (row >= o.rows || col >= o.cols) {
    ThrowBadValue(key, expression, "is out of range: '" + o.name + "' is " + std::to_string(o.rows) +
                                       "x" + std::to_string(o.cols) + " (indices start at 0)");
  }
  offset_ = offsets[i] + row * o.cols + col;
  count_ = 1;
}

double ObservableSelector::Evaluate(const Eigen::VectorXd& values) const {
  const auto segment = values.segment(offset_, count_);
  switch (reduction_) {
    case Reduction::kElement: return values[offset_];
    case Reduction::kMax: return segment.maxCoeff();
    case Reduction::kMin: return segment.minCoeff();
    case Reduction::kMaxAbs: return segment.cwiseAbs().maxCoeff();
  }
  return std::nan("");
}

}  // namespace moeflow
