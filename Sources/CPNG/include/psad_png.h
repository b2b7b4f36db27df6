// No stable API: this header only feeds the Vision module's PNG layer.
// Every libpng call lives in psad_png.c, so libpng's longjmp-based error
// handling never unwinds a Swift frame.
#ifndef PSAD_PNG_H
#define PSAD_PNG_H

#include <stddef.h>
#include <stdint.h>

#define PSAD_PNG_MESSAGE_SIZE 256

/// How to decode colour.
typedef enum {
    /// Gray stays gray (1 channel), gray+alpha 2, RGB 3, RGBA 4; palette
    /// images expand to RGB or RGBA; tRNS chunks become an alpha channel.
    PSAD_PNG_COLOURS = 0,
    /// Palette images return their palette indices (1 channel); others as
    /// PSAD_PNG_COLOURS. Used for class-index masks.
    PSAD_PNG_INDICES = 1
} psad_png_mode;

typedef struct {
    uint32_t width;
    uint32_t height;
    int channels;        ///< 1..4, 8 bits each
    int source_bit_depth;
    int source_color_type;
    uint8_t *pixels;     ///< height * width * channels bytes, row-major; free with psad_png_free
} psad_png_image;

/// Decodes a PNG held in memory. Returns 0 on success; otherwise non-zero
/// with a description in `message` and nothing to free.
int psad_png_decode(const uint8_t *data, size_t size, psad_png_mode mode,
                    psad_png_image *out, char message[PSAD_PNG_MESSAGE_SIZE]);

/// Encodes 8-bit pixels (channels 1..4). When `palette` is non-NULL and
/// channels == 1, the image is written as a palette image with
/// `palette_count` RGB entries. On success returns 0 and a malloc'ed buffer
/// in *out_data (free with psad_png_free_buffer).
int psad_png_encode(const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                    const uint8_t *palette, int palette_count,
                    uint8_t **out_data, size_t *out_size,
                    char message[PSAD_PNG_MESSAGE_SIZE]);

/// The libpng version string this target was linked against.
const char *psad_png_version(void);

void psad_png_free(psad_png_image *image);
void psad_png_free_buffer(uint8_t *data);

#endif
