/* `i3rt serve`: nnInteractive's HTTP server protocol on i3rt sessions (cli/serve.c).
 * cli/i3rt.c dispatches `i3rt serve ARGS` to cli_serve(argc, argv) with argv = ARGS. */
#ifndef I3RT_CLI_SERVE_H
#define I3RT_CLI_SERVE_H

int cli_serve(int argc, char **argv);

#endif /* I3RT_CLI_SERVE_H */
