/* A tiny C extension for the compiled-code tests: hold(n, size) allocates n bytes objects
 * of `size` bytes inside C and returns them in a list. tracemalloc charges that memory to
 * the Python line that called hold(). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *hold(PyObject *self, PyObject *args) {
    Py_ssize_t n, size;
    if (!PyArg_ParseTuple(args, "nn", &n, &size))
        return NULL;
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyBytes_FromStringAndSize(NULL, size);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        memset(PyBytes_AS_STRING(item), 'x', (size_t)size);
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyMethodDef methods[] = {
    {"hold", hold, METH_VARARGS, "hold(n, size) -> list of n bytes objects made in C"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "allocmod", NULL, -1, methods};

PyMODINIT_FUNC PyInit_allocmod(void) { return PyModule_Create(&module); }
