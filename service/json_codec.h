// JSON <-> protobuf messages for the REST gateway: protobuf's JSON mapping of the messages in
// proto/loom.proto (no second, hand-written schema), with explicit limits checked before
// protobuf's parser sees the input.
//
//   v1::SubmitRequest req;
//   Status s = JsonToMessage(body, &req, {.max_bytes = 1 << 20, .max_depth = 64});
//   std::string out = MessageToJson(resp);  // {"task_id": "..."}: snake_case names
//
// JsonToMessage must never crash or hang on any input (a fuzz target calls it): sizes and
// nesting are checked by a linear scan first, so protobuf's recursive parser never sees deep
// input. Thread-safe (no state).
#pragma once

#include <google/protobuf/message.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace loom::service {

struct JsonLimits {
  size_t max_bytes = 11 * 1024 * 1024;  // the whole document
  int max_depth = 64;                   // objects and arrays inside each other
};

// Parses a JSON object into `msg` (cleared first). Field names may be snake_case (as in the
// .proto) or lowerCamelCase; 64-bit integers may be numbers or strings; enums names or numbers.
// Errors: RESOURCE_EXHAUSTED over limits.max_bytes (no retry hint: a size limit);
// INVALID_ARGUMENT for an empty document, nesting deeper than limits.max_depth, malformed
// JSON, a value of the wrong type, or an unknown field (the message names the field).
Status JsonToMessage(std::string_view json, google::protobuf::Message* msg, const JsonLimits& limits);

// The message as compact JSON with the .proto's snake_case field names; fields with default
// values are printed too (a client sees "deleted": 0 rather than nothing). INTERNAL when
// protobuf cannot print it (a string field holding invalid UTF-8).
Result<std::string> MessageToJson(const google::protobuf::Message& msg);

// The deepest nesting of objects and arrays in `json`, counting brackets outside strings,
// stopping as soon as it passes `stop_above` (so the scan is cheap on hostile input). Does not
// validate the document.
int JsonNestingDepth(std::string_view json, int stop_above);

// `s` as a JSON string literal, quotes included. Bytes that are not valid UTF-8 become U+FFFD,
// so the output is valid JSON whatever `s` holds (error messages quote what clients sent).
std::string JsonQuote(std::string_view s);

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool IsValidUtf8(std::string_view s);

}  // namespace loom::service
