/* shmsession._hot: the compiled hot path (see shmsession/_build.py). Placeholder. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_blake2b.h"

static struct PyModuleDef hot_module = {PyModuleDef_HEAD_INIT, "shmsession._hot", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__hot(void) { return PyModule_Create(&hot_module); }
