// loom-worker: runs kernels for one endpoint. See worker/worker.h for flags and behaviour.
#include "worker/worker.h"

int main(int argc, char** argv) { return loom::worker::WorkerMain(argc, argv); }
