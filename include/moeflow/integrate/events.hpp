// moeflow/integrate/events.hpp
// Phase events (theory.md §4): the first time an observable crosses a threshold, e.g.
// "escape: m >= 0.5". An event names an observable expression:
//   name          a scalar observable (or the only element of a 1 x 1 one)
//   name[i]       element i of a vector observable (0-based)
//   name[i,j]     element (i, j) of a matrix observable
//   max(name), min(name), maxabs(name)   a reduction over all elements
//   max(name[i:j])  (and min, maxabs)    a reduction over the elements i, ..., j − 1 of a vector
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "moeflow/integrate/flow_system.hpp"

namespace moeflow {

enum class Comparison { kGreaterEqual, kGreater, kLessEqual, kLess };

const char* ToString(Comparison comparison);
// Accepts ">=", ">", "<=", "<". Returns false for anything else.
bool FromString(const std::string& text, Comparison* comparison);

struct EventSpec {
  std::string name;
  std::string observable;  // an expression as above
  Comparison comparison = Comparison::kGreaterEqual;
  double threshold = 0.0;  // for a relative event: set when its run starts
  bool stop = false;       // stop the run when the event happens
  // A relative event (theory.md §4: "the risk below a fraction of its initial value", "an overlap
  // above c times its initial value"): the threshold is `relative` times the observable's value at
  // t = 0 of the run (of each SGD seed its own), which `reference` then holds. NaN: an absolute
  // threshold.
  double relative = std::numeric_limits<double>::quiet_NaN();
  double reference = std::numeric_limits<double>::quiet_NaN();

  bool IsRelative() const { return !std::isnan(relative); }
};

// Fixes a relative event's threshold from its observable's value at the run's t = 0:
// threshold = relative · initial_value. Does nothing to an absolute event or to one already fixed
// (a stage of a protocol keeps the threshold of the run's start).
void FixRelativeThreshold(EventSpec* spec, double initial_value);

// An observable expression resolved against a system's observables.
class ObservableSelector {
 public:
  enum class Reduction { kElement, kMax, kMin, kMaxAbs };

  // Throws InputError naming `key` if the expression is malformed or names an unknown
  // observable or an index out of range.
  ObservableSelector(const std::string& expression, const std::vector<ObservableInfo>& observables,
                     const std::string& key);

  // The selected value from the concatenated observable values.
  double Evaluate(const Eigen::VectorXd& values) const;

  // The index, in the system's Observables(), of the observable the expression reads.
  int observable() const { return observable_; }

 private:
  int observable_ = 0;
  Reduction reduction_ = Reduction::kElement;
  int offset_ = 0;  // first value of the observable (kElement: of the element)
  int count_ = 1;   // number of values reduced over
};

struct EventRecord {
  EventSpec spec;
  bool occurred = false;
  double time = std::numeric_limits<double>::quiet_NaN();
  double value = std::numeric_limits<double>::quiet_NaN();  // the observable at `time`
};

// Which observables the events not yet occurred read (records[e] belongs to selectors[e]): the
// `wanted` argument of FlowSystem::ObserveSome when only the events need values.
std::vector<bool> ObservablesPendingEventsRead(const std::vector<ObservableSelector>& selectors,
                                               const std::vector<EventRecord>& records, int observable_count);

// True if `value` satisfies the event's comparison with its threshold.
bool EventConditionHolds(const EventSpec& spec, double value);

}  // namespace moeflow
