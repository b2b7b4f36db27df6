import Tensor

/// An 8-bit image with interleaved channels (1 gray, 2 gray+alpha, 3 RGB,
/// 4 RGBA), rows top to bottom. Class-index masks are 1-channel images
/// whose values are class ids.
public struct Image: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public let channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition((1...4).contains(channels), "an image has 1 to 4 channels, got \(channels)")
        precondition(pixels.count == width * height * channels,
                     "\(width)x\(height)x\(channels) image needs \(width * height * channels) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// A blank image filled with `value`.
    public init(width: Int, height: Int, channels: Int, value: UInt8 = 0) {
        self.init(width: width, height: height, channels: channels,
                  pixels: [UInt8](repeating: value, count: width * height * channels))
    }

    public subscript(x x: Int, y y: Int, channel channel: Int) -> UInt8 {
        get { pixels[(y * width + x) * channels + channel] }
        set { pixels[(y * width + x) * channels + channel] = newValue }
    }

    /// The image as a [1, channels, height, width] tensor scaled to [0, 1].
    public func tensor() -> Tensor {
        let plane = width * height, channels = self.channels
        // Written once through pointers: element-wise stores into the
        // tensor's array checked its uniqueness per element (in `perf`, this
        // function was 2.0% of a segment-train run's samples, now 0.55%).
        return Tensor(shape: [1, channels, height, width]) { out in
            pixels.withUnsafeBufferPointer { src in
                for c in 0..<channels {
                    let dst = out.baseAddress! + c * plane
                    for i in 0..<plane { dst[i] = Float(src[i &* channels &+ c]) / 255 }
                }
            }
        }
    }

    /// An image from a [1, C, H, W] tensor in [0, 1] (values clamped, rounded).
    public init(tensor t: Tensor) {
        let (n, c, h, w) = t.nchw
        precondition(n == 1, "one image at a time, got batch \(n)")
        var pixels = [UInt8](repeating: 0, count: c * h * w)
        let plane = h * w
        for i in 0..<plane {
            for k in 0..<c {
                pixels[i * c + k] = UInt8((min(max(t.storage[k * plane + i], 0), 1) * 255).rounded())
            }
        }
        self.init(width: w, height: h, channels: c, pixels: pixels)
    }
}
