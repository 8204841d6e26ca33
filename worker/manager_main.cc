// loom-manager: the per-node process of an endpoint's block. See worker/manager.h.
#include "worker/manager.h"

int main(int argc, char** argv) { return loom::worker::ManagerMain(argc, argv); }
