// Run a projector graph written by `onnxdeconv export` with the ONNX Runtime C++ API.
//
//   project PROJECTOR.onnx INPUT.f32 CHANNEL[,CHANNEL...] [OUT.f32]
//           [--shape 1,1,28,28] [--position H,W[;H,W...]]
//
// The same program as examples/node/project.mjs. INPUT.f32 holds the model's input for one image
// as raw little-endian float32, already preprocessed; its shape comes from the session's input
// metadata with batch 1 (pass --shape when the model input has free dimensions). Prints one JSON
// line {"activation": [...], "position": [[h, w], ...], "projection_shape": [...]} and, when
// OUT.f32 is given, writes the projections ([K, ...input shape without batch]) to it as raw
// little-endian float32.
//
// --position is for graphs exported with --position-input: one position for all channels, or one
// per channel separated by ';'. A graph exported without --batch takes one channel per run; for
// several channels this program runs it once per channel.

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

const char* const kChannel = "channel";
const char* const kPosition = "position";
const char* const kUsage =
    "usage: project PROJECTOR.onnx INPUT.f32 CHANNEL[,CHANNEL...] [OUT.f32] "
    "[--shape 1,1,28,28] [--position H,W[;H,W...]]";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::vector<int64_t> ParseInts(const std::string& text, const std::string& what) {
  std::vector<int64_t> values;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, ',')) {
    if (part.empty() || part.find_first_not_of("0123456789") != std::string::npos) {
      throw UsageError(what + " must be comma-separated non-negative integers, got '" + text + "'");
    }
    values.push_back(std::stoll(part));
  }
  if (values.empty()) throw UsageError(what + " is empty");
  return values;
}

struct Args {
  std::string model, input, output;
  std::vector<int64_t> channels, shape;
  std::string position;
  bool has_position = false;
};

Args ParseArgs(int argc, char** argv) {
  Args args;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage << "\n";
      std::exit(0);
    }
    if (arg == "--shape" || arg == "--position") {
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      const std::string value = argv[++i];
      if (arg == "--shape") {
        args.shape = ParseInts(value, "--shape");
      } else {
        args.position = value;
        args.has_position = true;
      }
    } else if (arg.rfind("--", 0) == 0) {
      throw UsageError("unknown option '" + arg + "'");
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() < 3 || positional.size() > 4) throw UsageError(kUsage);
  args.model = positional[0];
  args.input = positional[1];
  args.channels = ParseInts(positional[2], "CHANNEL");
  if (positional.size() == 4) args.output = positional[3];
  return args;
}

std::string Join(const std::vector<int64_t>& values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  return out;
}

// Raw little-endian float32, independent of the host's byte order.
std::vector<float> ReadFloat32(const std::string& path, size_t count) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw UsageError("cannot read " + path);
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(file)),
                                   std::istreambuf_iterator<char>());
  if (bytes.size() != count * 4) {
    throw UsageError(path + " has " + std::to_string(bytes.size()) + " bytes; the input needs " +
                     std::to_string(count * 4) + " (raw little-endian float32)");
  }
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) {
    const unsigned char* b = &bytes[i * 4];
    const uint32_t bits = uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 |
                          uint32_t(b[3]) << 24;
    std::memcpy(&values[i], &bits, 4);
  }
  return values;
}

void WriteFloat32(const std::string& path, const std::vector<float>& values) {
  std::vector<unsigned char> bytes(values.size() * 4);
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], 4);
    for (int k = 0; k < 4; ++k) bytes[i * 4 + k] = static_cast<unsigned char>(bits >> (8 * k));
  }
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!file) throw std::runtime_error("cannot write " + path);
}

// One [h, w, ...] row per channel from --position.
std::vector<std::vector<int64_t>> ParsePositions(const std::string& text, size_t count) {
  std::vector<std::vector<int64_t>> rows;
  std::stringstream stream(text);
  std::string row;
  while (std::getline(stream, row, ';')) rows.push_back(ParseInts(row, "--position"));
  if (rows.empty()) throw UsageError("--position is empty");
  for (const auto& r : rows) {
    if (r.size() != rows[0].size()) {
      throw UsageError("--position rows must all have the same length, got '" + text + "'");
    }
  }
  if (rows.size() == 1) return std::vector<std::vector<int64_t>>(count, rows[0]);
  if (rows.size() != count) {
    throw UsageError("--position has " + std::to_string(rows.size()) + " rows for " +
                     std::to_string(count) + " channels: give 1 or " + std::to_string(count));
  }
  return rows;
}

int Run(const Args& args) {
  Ort::Env env(ORT_LOGGING_LEVEL_FATAL, "onnxdeconv");  // errors are reported with context below
  Ort::SessionOptions options;
  const std::filesystem::path model_path(args.model);
  Ort::Session session(env, model_path.c_str(), options);
  Ort::AllocatorWithDefaultOptions allocator;

  std::vector<std::string> input_names;
  std::vector<std::vector<int64_t>> input_dims;
  for (size_t i = 0; i < session.GetInputCount(); ++i) {
    input_names.push_back(session.GetInputNameAllocated(i, allocator).get());
    input_dims.push_back(session.GetInputTypeInfo(i).GetTensorTypeAndShapeInfo().GetShape());
  }
  std::vector<std::string> output_names;
  for (size_t i = 0; i < session.GetOutputCount(); ++i) {
    output_names.push_back(session.GetOutputNameAllocated(i, allocator).get());
  }
  auto find = [](const std::vector<std::string>& names, const std::string& name) -> int {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) return int(i);
    }
    return -1;
  };
  const int channel_index = find(input_names, kChannel);
  if (channel_index < 0) {
    throw UsageError(args.model + " has no 'channel' input: is it a graph from 'onnxdeconv export'?");
  }
  const bool takes_position = find(input_names, kPosition) >= 0;
  if (takes_position && !args.has_position) {
    throw UsageError(args.model + " was exported with --position-input: pass --position H,W");
  }
  if (!takes_position && args.has_position) {
    throw UsageError(args.model + " finds the position itself: drop --position");
  }
  int image_index = -1;
  for (size_t i = 0; i < input_names.size(); ++i) {
    if (input_names[i] != kChannel && input_names[i] != kPosition) image_index = int(i);
  }
  if (image_index < 0) throw UsageError(args.model + " has no image input");

  // The model input's shape with batch 1, from --shape or the session's metadata.
  std::vector<int64_t> shape = args.shape;
  if (shape.empty()) {
    shape = input_dims[image_index];
    if (!shape.empty()) shape[0] = 1;
    for (int64_t d : shape) {
      if (d < 1) {
        throw UsageError("input '" + input_names[image_index] + "' has free dimensions [" +
                         Join(input_dims[image_index]) + "]: pass --shape, e.g. --shape 1,3,224,224");
      }
    }
  }
  const size_t count = std::accumulate(shape.begin(), shape.end(), size_t{1},
                                       [](size_t a, int64_t b) { return a * size_t(b); });
  std::vector<float> image = ReadFloat32(args.input, count);

  const std::vector<std::vector<int64_t>> positions =
      takes_position ? ParsePositions(args.position, args.channels.size())
                     : std::vector<std::vector<int64_t>>();

  // A graph exported without --batch has channel [1]: run it once per channel.
  const std::vector<int64_t>& channel_dims = input_dims[channel_index];
  const bool fixed_one = channel_dims.size() == 1 && channel_dims[0] == 1;
  std::vector<std::vector<size_t>> groups;
  if (fixed_one) {
    for (size_t i = 0; i < args.channels.size(); ++i) groups.push_back({i});
  } else {
    groups.emplace_back(args.channels.size());
    std::iota(groups[0].begin(), groups[0].end(), size_t{0});
  }

  const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<const char*> output_ptrs;
  for (const auto& name : output_names) output_ptrs.push_back(name.c_str());

  std::vector<float> activation, projection;
  std::vector<std::vector<int64_t>> position;
  std::vector<int64_t> projection_shape;
  for (const auto& rows : groups) {
    std::vector<int64_t> channels, flat_positions;
    for (size_t i : rows) {
      channels.push_back(args.channels[i]);
      if (takes_position) {
        flat_positions.insert(flat_positions.end(), positions[i].begin(), positions[i].end());
      }
    }
    std::vector<const char*> names;
    std::vector<Ort::Value> feeds;
    names.push_back(input_names[image_index].c_str());
    feeds.push_back(Ort::Value::CreateTensor<float>(memory, image.data(), image.size(),
                                                    shape.data(), shape.size()));
    const std::vector<int64_t> channel_shape{int64_t(channels.size())};
    names.push_back(kChannel);
    feeds.push_back(Ort::Value::CreateTensor<int64_t>(memory, channels.data(), channels.size(),
                                                      channel_shape.data(), 1));
    std::vector<int64_t> position_shape;
    if (takes_position) {
      position_shape = {int64_t(rows.size()), int64_t(positions[0].size())};
      names.push_back(kPosition);
      feeds.push_back(Ort::Value::CreateTensor<int64_t>(
          memory, flat_positions.data(), flat_positions.size(), position_shape.data(), 2));
    }

    std::vector<Ort::Value> out;
    try {
      out = session.Run(Ort::RunOptions{nullptr}, names.data(), feeds.data(), feeds.size(),
                        output_ptrs.data(), output_ptrs.size());
    } catch (const Ort::Exception& err) {
      throw std::runtime_error("running " + args.model +
                               " failed (is every channel in range for the layer?): " + err.what());
    }

    const Ort::Value& act = out[find(output_names, "activation")];
    const size_t k = act.GetTensorTypeAndShapeInfo().GetElementCount();
    const float* act_data = act.GetTensorData<float>();
    activation.insert(activation.end(), act_data, act_data + k);

    if (takes_position) {
      for (size_t i : rows) position.push_back(positions[i]);
    } else {
      const Ort::Value& pos = out[find(output_names, kPosition)];
      const auto dims = pos.GetTensorTypeAndShapeInfo().GetShape();
      const size_t width = dims.size() > 1 ? size_t(dims.back()) : 1;
      const int64_t* data = pos.GetTensorData<int64_t>();
      for (size_t r = 0; r < k; ++r) position.emplace_back(data + r * width, data + (r + 1) * width);
    }

    const Ort::Value& proj = out[find(output_names, "projection")];
    const auto info = proj.GetTensorTypeAndShapeInfo();
    const float* proj_data = proj.GetTensorData<float>();
    projection.insert(projection.end(), proj_data, proj_data + info.GetElementCount());
    const auto dims = info.GetShape();
    if (projection_shape.empty()) {
      projection_shape = dims;
    } else {
      projection_shape[0] += dims[0];
    }
  }

  if (!args.output.empty()) WriteFloat32(args.output, projection);

  // %.9g prints every float32 exactly enough to read it back bit for bit.
  std::string json = "{\"activation\": [";
  char number[32];
  for (size_t i = 0; i < activation.size(); ++i) {
    std::snprintf(number, sizeof number, "%.9g", double(activation[i]));
    json += (i ? ", " : "") + std::string(number);
  }
  json += "], \"position\": [";
  for (size_t i = 0; i < position.size(); ++i) {
    json += (i ? ", [" : "[") + Join(position[i]) + "]";
  }
  json += "], \"projection_shape\": [" + Join(projection_shape) + "]}";
  std::cout << json << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(ParseArgs(argc, argv));
  } catch (const UsageError& err) {
    std::cerr << "error: " << err.what() << "\n";
    return 2;
  } catch (const std::exception& err) {
    std::cerr << "error: " << err.what() << "\n";
    return 1;
  }
}
