#include "service/json_codec.h"

#include <google/protobuf/util/json_util.h>

namespace loom::service {

namespace {
// The first line of protobuf's message: the parser adds the input around the error and a caret
// on further lines, which may hold bytes that are not UTF-8.
std::string MessageOf(const google::protobuf::util::Status& s) {
  const auto m = s.message();  // StringPiece or string_view, depending on the protobuf version
  std::string out(m.data(), m.size());
  out = out.substr(0, out.find('\n'));
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

bool OnlyWhitespace(std::string_view s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return false;
  }
  return true;
}
// The length of the well-formed UTF-8 sequence at the start of `s`, or 0 if there is none.
size_t Utf8SequenceLength(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong forms
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // no overlong forms
    if (c == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < n || b(1) < lo || b(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (b(i) < 0x80 || b(i) > 0xBF) return 0;
  }
  return n;
}
}  // namespace

bool IsValidUtf8(std::string_view s) {
  while (!s.empty()) {
    const size_t n = Utf8SequenceLength(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

std::string JsonQuote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  while (!s.empty()) {
    const size_t n = Utf8SequenceLength(s);
    if (n == 0) {
      out += "\\ufffd";
      s.remove_prefix(1);
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(s[0]);
    if (n > 1) {
      out.append(s.data(), n);
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
    s.remove_prefix(n);
  }
  out += '"';
  return out;
}

int JsonNestingDepth(std::string_view json, int stop_above) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '{':
      case '[':
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > stop_above) return deepest;
        }
        break;
      case '}':
      case ']':
        if (depth > 0) --depth;  // unbalanced: the parser will say so
        break;
      default:
        break;
    }
  }
  return deepest;
}

Status JsonToMessage(std::string_view json, google::protobuf::Message* msg, const JsonLimits& limits) {
  msg->Clear();
  const std::string type = msg->GetDescriptor()->full_name();
  if (json.size() > limits.max_bytes) {
    return ResourceExhausted("the JSON document takes " + std::to_string(json.size()) + " bytes, over the limit of " +
                             std::to_string(limits.max_bytes));
  }
  if (OnlyWhitespace(json)) return InvalidArgument("the JSON document is empty: send a " + type + " object");
  if (JsonNestingDepth(json, limits.max_depth) > limits.max_depth) {
    return InvalidArgument("the JSON document has nesting deeper than " + std::to_string(limits.max_depth) +
                           " levels of objects and arrays");
  }
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto s = google::protobuf::util::JsonStringToMessage(google::protobuf::StringPiece(json.data(), json.size()), msg,
                                                       options);
  if (!s.ok()) {
    msg->Clear();
    return InvalidArgument("the JSON document is not a valid " + type + ": " + MessageOf(s));
  }
  return Status::Ok();
}

Result<std::string> MessageToJson(const google::protobuf::Message& msg) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  auto s = google::protobuf::util::MessageToJsonString(msg, &out, options);
  if (!s.ok()) return Internal("cannot print a " + msg.GetDescriptor()->full_name() + " as JSON: " + MessageOf(s));
  return out;
}

}  // namespace loom::service
