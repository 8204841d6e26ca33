// A tiny HTTP/1.0 GET over a loopback TCP socket, and a reader for Prometheus text scrapes:
// enough for tests to check /metrics without a new dependency.
#pragma once

#include <optional>
#include <string>

#include "common/status.h"

namespace loom::testing {

// GET http://`host_port``path`; returns the body of a 200 answer, kUnavailable otherwise.
// `host_port` is an IPv4 literal and a port, e.g. "127.0.0.1:9464".
Result<std::string> HttpGet(const std::string& host_port, const std::string& path = "/metrics");

// The value of one series in a Prometheus text scrape, named exactly as the scrape writes it:
// `name` or `name{label="v",...}` (prometheus-cpp writes labels sorted by name). nullopt when
// the scrape does not have it.
std::optional<double> ScrapeValue(const std::string& scrape, const std::string& series);

}  // namespace loom::testing
