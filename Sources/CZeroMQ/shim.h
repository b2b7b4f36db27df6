// No stable API: this header only feeds the Shared module's ZeroMQ layer.
#include <zmq.h>
