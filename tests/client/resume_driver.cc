// Test driver for the C++ client's resume (tests/client/test_resume.py,
// tests/deploy/test_replica_faults.py): streams the chunks DIR/chunk_<i>.npy of one session
// through StreamChannel as the test says on stdin, so the test can break servers between
// chunks, and writes what the caller saw.
//
//   resume_driver TARGET MODEL SESSION_ID DIR [--no_resume] [--header] [--omit_state]
//   stdin:  "send K"  Send() the next K chunks (pipelined), then Read() K answers
//           "end"     End() the session
//   stdout: "ok <chunks answered> <steps_seen> <resumes>" per command, "error <status>" on one
//   files:  DIR/out_<i>.npy per answered chunk, DIR/h_n.npy (the last h_n, unless omitted)
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/npy.h"
#include "client/rnnserve_client.h"

namespace rc = rnnserve::client;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::cerr << "usage: resume_driver TARGET MODEL SESSION_ID DIR [--no_resume] [--header] "
                 "[--omit_state]\n";
    return 2;
  }
  const std::string target = argv[1], model = argv[2], session_id = argv[3], dir = argv[4];
  rc::ClientOptions options;
  bool header = false, omit_state = false;
  for (int i = 5; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--no_resume") options.resume = false;
    if (flag == "--header") header = true;
    if (flag == "--omit_state") omit_state = true;
  }
  options.resume_policy.deadline = absl::Seconds(60);
  auto client = rc::RnnServeClient::Connect(target, options);
  if (!client.ok()) {
    std::cout << "error " << client.status() << std::endl;
    return 1;
  }
  std::vector<std::pair<std::string, std::string>> metadata;
  if (header) metadata.emplace_back("x-session-id", session_id);
  auto stream = (*client)->OpenStream(metadata);
  if (!stream.ok()) {
    std::cout << "error " << stream.status() << std::endl;
    return 1;
  }
  int sent = 0, answered = 0;
  int64_t steps = 0;
  std::string command;
  while (std::cin >> command) {
    absl::Status status;
    if (command == "send") {
      int count = 0;
      std::cin >> count;
      std::vector<uint64_t> ids;
      for (int k = 0; k < count && status.ok(); ++k, ++sent) {
        auto chunk = rnnserve::ReadNpy(absl::StrCat(dir, "/chunk_", sent, ".npy"));
        if (!chunk.ok()) return std::cout << "error " << chunk.status() << std::endl, 1;
        rnnserve::v1::StreamRequest request;
        request.set_session_id(session_id);
        request.set_start(sent == 0);
        if (sent == 0) request.set_model(model);
        request.set_omit_state(omit_state);
        rnnserve::EncodeTensor(*chunk, rnnserve::TensorEncoding::kRaw, request.mutable_input());
        auto id = (*stream)->Send(std::move(request));
        status = id.status();
      }
      for (int k = 0; k < count && status.ok(); ++k) {
        auto response = (*stream)->Read();
        if (!response.ok()) {
          status = response.status();
          break;
        }
        auto result = rc::StreamChannel::Decode(*response);
        if (!result.ok()) {
          status = result.status();
          break;
        }
        steps = result->steps_seen;
        status = rnnserve::WriteNpy(absl::StrCat(dir, "/out_", answered++, ".npy"),
                                    result->output);
        if (status.ok() && result->h_n.has_value()) {
          status = rnnserve::WriteNpy(absl::StrCat(dir, "/h_n.npy"), *result->h_n);
        }
      }
    } else if (command == "end") {
      auto result = (*stream)->End(session_id);
      status = result.status();
      if (result.ok()) steps = result->steps_seen;
    }
    if (!status.ok()) {
      std::cout << "error " << status << std::endl;
      continue;
    }
    std::cout << "ok " << answered << " " << steps << " " << (*stream)->resumes() << std::endl;
  }
  std::cout << "finish " << (*stream)->Finish() << std::endl;
  return 0;
}
