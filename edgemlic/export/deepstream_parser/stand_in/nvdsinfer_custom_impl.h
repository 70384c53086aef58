/*
 * A stand-in for the DeepStream SDK's sources/includes/nvdsinfer_custom_impl.h (and the parts of
 * nvdsinfer.h it relies on), holding only the types edgemlic's classifier parser uses, so the tests
 * can compile and run the parser on a machine without DeepStream. On a DeepStream machine the
 * Makefile compiles against the SDK's real headers; this file is never installed next to the parser.
 *
 * Written by edgemlic from the documented declarations (DeepStream SDK API reference: nvdsinfer.h,
 * "NvDsInferLayerInfo", "NvDsInferNetworkInfo", "NvDsInferAttribute"; nvdsinfer_custom_impl.h,
 * "NvDsInferClassiferParseCustomFunc"); field names, order and types as documented there.
 */
#ifndef EDGEMLIC_NVDSINFER_STAND_IN_H
#define EDGEMLIC_NVDSINFER_STAND_IN_H

#include <string>
#include <type_traits>
#include <vector>

#define NVDSINFER_MAX_DIMS 8

typedef enum { FLOAT = 0, HALF = 1, INT8 = 2, INT32 = 3 } NvDsInferDataType;

typedef struct {
    unsigned int numDims;
    unsigned int d[NVDSINFER_MAX_DIMS];
    unsigned int numElements;
} NvDsInferDims;

typedef struct {
    NvDsInferDataType dataType;
    NvDsInferDims inferDims;
    int bindingIndex;
    const char *layerName;
    void *buffer;
    int isInput;
} NvDsInferLayerInfo;

typedef struct {
    unsigned int width;
    unsigned int height;
    unsigned int channels;
} NvDsInferNetworkInfo;

typedef struct {
    unsigned int attributeIndex;
    unsigned int attributeValue;
    float attributeConfidence;
    char *attributeLabel;
} NvDsInferAttribute;

typedef bool (*NvDsInferClassiferParseCustomFunc)(std::vector<NvDsInferLayerInfo> const &outputLayersInfo,
                                                  NvDsInferNetworkInfo const &networkInfo,
                                                  float classifierThreshold,
                                                  std::vector<NvDsInferAttribute> &attrList,
                                                  std::string &descString);

/* The SDK's macro checks the parser's signature against the typedef; this one does the same at
 * compile time. */
#define CHECK_CUSTOM_CLASSIFIER_PARSE_FUNC_PROTOTYPE(func)                                       \
    static_assert(std::is_same<decltype(&func), NvDsInferClassiferParseCustomFunc>::value, \
                  #func " does not match NvDsInferClassiferParseCustomFunc")

#endif
