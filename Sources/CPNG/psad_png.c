#include "psad_png.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Error state shared with libpng's callbacks. The message is copied here and
// the callback longjmps back to the setjmp in this file; no other frame is
// ever unwound.
typedef struct {
    jmp_buf jump;
    char *message;
} psad_png_error;

static void on_error(png_structp png, png_const_charp text) {
    psad_png_error *error = (psad_png_error *)png_get_error_ptr(png);
    snprintf(error->message, PSAD_PNG_MESSAGE_SIZE, "%s", text);
    longjmp(error->jump, 1);
}

static void on_warning(png_structp png, png_const_charp text) {
    (void)png;
    (void)text;
}

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t offset;
} memory_reader;

static void read_memory(png_structp png, png_bytep out, png_size_t count) {
    memory_reader *reader = (memory_reader *)png_get_io_ptr(png);
    if (reader->size - reader->offset < count) {
        png_error(png, "unexpected end of data (file truncated)");
    }
    memcpy(out, reader->data + reader->offset, count);
    reader->offset += count;
}

int psad_png_decode(const uint8_t *data, size_t size, psad_png_mode mode,
                    psad_png_image *out, char message[PSAD_PNG_MESSAGE_SIZE]) {
    memset(out, 0, sizeof(*out));
    message[0] = 0;
    if (size < 8 || png_sig_cmp((png_const_bytep)data, 0, 8) != 0) {
        snprintf(message, PSAD_PNG_MESSAGE_SIZE, "not a PNG file (bad signature)");
        return 1;
    }
    psad_png_error error;
    error.message = message;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
    if (!png) {
        snprintf(message, PSAD_PNG_MESSAGE_SIZE, "out of memory");
        return 1;
    }
    png_infop info = png_create_info_struct(png);
    // Declared volatile: they change between setjmp and a possible longjmp.
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    memory_reader reader = {data, size, 0};
    if (!info || setjmp(error.jump)) {
        free(pixels);
        free(rows);
        png_destroy_read_struct(&png, info ? &info : NULL, NULL);
        if (!message[0]) snprintf(message, PSAD_PNG_MESSAGE_SIZE, "out of memory");
        return 1;
    }
    png_set_read_fn(png, &reader, read_memory);
    png_set_user_limits(png, 1u << 15, 1u << 15);
    png_read_info(png, info);

    int color_type = png_get_color_type(png, info);
    int bit_depth = png_get_bit_depth(png, info);
    out->source_bit_depth = bit_depth;
    out->source_color_type = color_type;

    if (bit_depth == 16) png_set_strip_16(png);
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
        if (mode == PSAD_PNG_INDICES) {
            png_set_packing(png);
        } else {
            png_set_palette_to_rgb(png);
            if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
        }
    } else {
        if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    uint32_t width = png_get_image_width(png, info);
    uint32_t height = png_get_image_height(png, info);
    int channels = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)width * (size_t)channels) {
        png_error(png, "unsupported pixel layout after transforms");
    }
    pixels = malloc(rowbytes * height);
    rows = malloc(sizeof(png_bytep) * height);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (uint32_t y = 0; y < height; y++) rows[y] = pixels + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);

    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->width = width;
    out->height = height;
    out->channels = channels;
    out->pixels = pixels;
    return 0;
}

typedef struct {
    uint8_t *data;
    size_t size;
    size_t capacity;
} memory_writer;

static void write_memory(png_structp png, png_bytep in, png_size_t count) {
    memory_writer *writer = (memory_writer *)png_get_io_ptr(png);
    if (writer->size + count > writer->capacity) {
        size_t capacity = writer->capacity ? writer->capacity : 4096;
        while (capacity < writer->size + count) capacity *= 2;
        uint8_t *grown = realloc(writer->data, capacity);
        if (!grown) png_error(png, "out of memory");
        writer->data = grown;
        writer->capacity = capacity;
    }
    memcpy(writer->data + writer->size, in, count);
    writer->size += count;
}

static void flush_memory(png_structp png) { (void)png; }

int psad_png_encode(const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                    const uint8_t *palette, int palette_count,
                    uint8_t **out_data, size_t *out_size,
                    char message[PSAD_PNG_MESSAGE_SIZE]) {
    *out_data = NULL;
    *out_size = 0;
    message[0] = 0;
    static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                 PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    if (channels < 1 || channels > 4 || width == 0 || height == 0) {
        snprintf(message, PSAD_PNG_MESSAGE_SIZE, "cannot encode %ux%u image with %d channels",
                 width, height, channels);
        return 1;
    }
    if (palette && (channels != 1 || palette_count < 1 || palette_count > 256)) {
        snprintf(message, PSAD_PNG_MESSAGE_SIZE, "a palette image needs 1 channel and 1..256 colours");
        return 1;
    }
    psad_png_error error;
    error.message = message;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
    if (!png) {
        snprintf(message, PSAD_PNG_MESSAGE_SIZE, "out of memory");
        return 1;
    }
    png_infop info = png_create_info_struct(png);
    memory_writer writer = {NULL, 0, 0};
    if (!info || setjmp(error.jump)) {
        free(writer.data);
        png_destroy_write_struct(&png, info ? &info : NULL);
        if (!message[0]) snprintf(message, PSAD_PNG_MESSAGE_SIZE, "out of memory");
        return 1;
    }
    png_set_write_fn(png, &writer, write_memory, flush_memory);
    int color_type = palette ? PNG_COLOR_TYPE_PALETTE : types[channels];
    png_set_IHDR(png, info, width, height, 8, color_type, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette) {
        png_color colours[256];
        for (int i = 0; i < palette_count; i++) {
            colours[i].red = palette[3 * i];
            colours[i].green = palette[3 * i + 1];
            colours[i].blue = palette[3 * i + 2];
        }
        png_set_PLTE(png, info, colours, palette_count);
    }
    png_write_info(png, info);
    size_t rowbytes = (size_t)width * (size_t)channels;
    for (uint32_t y = 0; y < height; y++) {
        png_write_row(png, (png_const_bytep)(pixels + (size_t)y * rowbytes));
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out_data = writer.data;
    *out_size = writer.size;
    return 0;
}

void psad_png_free(psad_png_image *image) {
    free(image->pixels);
    image->pixels = NULL;
}

void psad_png_free_buffer(uint8_t *data) { free(data); }

const char *psad_png_version(void) { return png_get_libpng_ver(NULL); }
